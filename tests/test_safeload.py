"""The leaderboard's loader: what it accepts, what it rejects, and that hostile files run nothing."""
import builtins
import os
import pickle
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from grader import safeload
from grader.reference import reference
from grader.safeload import SubmissionError, load_state_dict


@pytest.fixture(scope="module")
def expected():
    return {name: t.shape for name, t in reference().AlexNet().state_dict().items()}


@pytest.fixture(scope="module")
def student_model():
    """An AlexNet as a student's script pickles it: the class is ``net.models.AlexNet``."""
    from net.models import AlexNet
    torch.manual_seed(1)
    model = AlexNet()
    assert type(model).__module__ == "net.models"
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, student_model):
    """The same model saved whole and as a state_dict."""
    folder = tmp_path_factory.mktemp("saved")
    torch.save(student_model, folder / "whole.ptmodel")
    torch.save(student_model.state_dict(), folder / "state.ptmodel")
    return folder


def save(obj, path):
    torch.save(obj, path)
    return path


def rejected(path, expected, *words):
    with pytest.raises(SubmissionError) as caught:
        load_state_dict(path, expected)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


# ----------------------------------------------------------------------------- accepted

def test_a_whole_pickled_model_is_accepted(saved, expected, student_model):
    tensors = load_state_dict(saved / "whole.ptmodel", expected)
    assert list(tensors) == list(expected)
    for name, tensor in student_model.state_dict().items():
        assert torch.equal(tensors[name], tensor)


def test_a_state_dict_is_accepted_and_loads_strictly(saved, expected):
    tensors = load_state_dict(saved / "state.ptmodel", expected)
    model = reference().AlexNet()
    model.load_state_dict(tensors, strict=True)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors.values())


def test_loading_a_whole_model_builds_only_inert_stand_ins(saved):
    tensors = safeload.read_tensors(saved / "whole.ptmodel")
    assert len(tensors) == 16
    assert not any(isinstance(t, nn.Module) for t in tensors.values())


# ----------------------------------------------------------------------------- wrong contents

def test_another_architecture_is_rejected(tmp_path, expected):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 10))
    rejected(save(other, tmp_path / "seq.ptmodel"), expected, "torch.nn.modules.container.Sequential")
    rejected(save(other.state_dict(), tmp_path / "seq_state.ptmodel"), expected, "not the homework's AlexNet",
             "missing conv1.weight")


class OtherNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)


def test_a_model_of_another_class_is_rejected(tmp_path, expected):
    rejected(save(OtherNet(), tmp_path / "other.ptmodel"), expected, "OtherNet", "not loaded")


def test_wrong_shapes_missing_and_extra_tensors_are_rejected(tmp_path, expected, student_model):
    state = OrderedDict(student_model.state_dict())
    wide = OrderedDict(state, **{"fc3.weight": torch.zeros(100, 4096), "fc3.bias": torch.zeros(100)})
    rejected(save(wide, tmp_path / "wide.ptmodel"), expected, "fc3.weight has shape (100, 4096)")
    missing = OrderedDict((k, v) for k, v in state.items() if k != "fc3.bias")
    rejected(save(missing, tmp_path / "missing.ptmodel"), expected, "missing fc3.bias")
    extra = OrderedDict(state, **{"fc4.weight": torch.zeros(2, 2)})
    rejected(save(extra, tmp_path / "extra.ptmodel"), expected, "unexpected fc4.weight")
    parallel = OrderedDict((f"module.{k}", v) for k, v in state.items())
    rejected(save(parallel, tmp_path / "dp.ptmodel"), expected, "unexpected module.conv1.bias")


def test_an_extra_layer_in_a_whole_model_is_rejected(tmp_path, expected):
    from net.models import AlexNet
    model = AlexNet()
    model.fc4 = nn.Linear(10, 10)
    rejected(save(model, tmp_path / "fc4.ptmodel"), expected, "unexpected fc4.bias, fc4.weight")
    model = AlexNet()
    model.bn = nn.BatchNorm2d(3)
    rejected(save(model, tmp_path / "bn.ptmodel"), expected, "BatchNorm2d")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_rejected(tmp_path, expected, student_model, bad):
    state = OrderedDict((k, v.clone()) for k, v in student_model.state_dict().items())
    state["conv2.weight"][3, 2, 1, 0] = bad
    rejected(save(state, tmp_path / "nan.ptmodel"), expected, "conv2.weight contains NaN or Inf")


def test_other_dtypes_are_rejected(tmp_path, expected, student_model):
    state = OrderedDict((k, v.double()) for k, v in student_model.state_dict().items())
    rejected(save(state, tmp_path / "double.ptmodel"), expected, "torch.float64", "float32")


def test_something_else_than_a_model_is_rejected(tmp_path, expected):
    rejected(save([1, 2, 3], tmp_path / "list.ptmodel"), expected, "found a list")
    rejected(save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "nested.ptmodel"), expected,
             "not the homework's AlexNet")


# ----------------------------------------------------------------------------- damaged files

@pytest.mark.parametrize("content, words", [
    (b"", ["not a PyTorch file"]),
    (b"hello, this is my homework\n", ["not a PyTorch file"]),
    (pickle.dumps({"a": 1}), ["not a PyTorch file"]),
])
def test_files_that_are_not_torch_files_are_rejected(tmp_path, expected, content, words):
    path = tmp_path / "x.ptmodel"
    path.write_bytes(content)
    rejected(path, expected, *words)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_files_are_rejected(tmp_path, expected, saved, keep):
    data = (saved / "state.ptmodel").read_bytes()
    path = tmp_path / "cut.ptmodel"
    path.write_bytes(data[:int(len(data) * keep)])
    rejected(path, expected, "truncated or damaged")


def test_a_zip_bomb_is_rejected_before_anything_is_unpacked(tmp_path, expected, monkeypatch):
    monkeypatch.setattr(safeload, "MAX_UNPACKED_BYTES", 16 * 2 ** 20)  # the same check, a smaller bomb
    path = tmp_path / "bomb.ptmodel"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", pickle.dumps({}))
        with archive.open("bomb/data/0", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(safeload.MAX_UNPACKED_BYTES // len(block) + 8):
                entry.write(block)
    assert path.stat().st_size < 2 ** 16
    rejected(path, expected, "declares", "not a homework model")


def test_compressed_entries_are_rejected(tmp_path, expected, saved):
    path = tmp_path / "deflated.ptmodel"
    with zipfile.ZipFile(saved / "state.ptmodel") as source, \
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    rejected(path, expected, "compressed entries")


def test_a_huge_pickle_or_too_many_entries_are_rejected(tmp_path, expected):
    rejected(save({"x": "y" * (2 * safeload.MAX_PICKLE_BYTES)}, tmp_path / "big.ptmodel"), expected,
             "data.pkl is")
    path = tmp_path / "many.ptmodel"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(safeload.MAX_ENTRIES + 1):
            archive.writestr(f"many/data/{i}", b"")
    rejected(path, expected, "entries")


def test_a_file_over_the_size_limit_is_rejected(tmp_path, expected, monkeypatch, saved):
    monkeypatch.setattr(safeload, "MAX_FILE_BYTES", 1000)
    rejected(saved / "state.ptmodel", expected, "bytes")


# ----------------------------------------------------------------------------- hostile pickles

class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CreatesFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


class Evaluates:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


HOSTILE = [RunsCommand, CreatesFile, Evaluates]


@pytest.mark.parametrize("payload", HOSTILE, ids=lambda c: c.__name__)
def test_hostile_pickles_run_nothing(tmp_path, expected, payload, monkeypatch):
    from net.models import AlexNet
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    model = AlexNet()
    model.note = payload(marker)           # hidden inside a whole model
    state = OrderedDict(model.state_dict())
    state["fc3.bias"] = payload(marker)    # in place of a tensor of a state_dict
    files = {"alone": payload(marker), "in-model": model, "in-state": state}
    for name, obj in files.items():
        path = tmp_path / f"{name}.ptmodel"
        torch.save(obj, path)
        assert not marker.exists()
        message = rejected(path, expected, "not loaded")
        assert not marker.exists(), f"{name}: loading created a file"
        assert "could run code" in message
    raw = tmp_path / "raw.ptmodel"          # a plain pickle, not torch's zip
    raw.write_bytes(pickle.dumps(payload(marker)))
    rejected(raw, expected, "not a PyTorch file")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{n}.ptmodel" for n in files] + ["raw.ptmodel"])


def test_a_stand_in_never_runs_student_methods(tmp_path, expected):
    """A pickled AlexNet whose state holds a callable (a forward hook) is rejected: functions are not allowed."""
    from net.models import AlexNet
    model = AlexNet()
    model.register_forward_hook(print)
    rejected(save(model, tmp_path / "hook.ptmodel"), expected, "print", "not loaded")


def test_loading_does_not_change_what_net_means(saved, expected):
    import sys
    before = sys.modules.get("net")
    load_state_dict(saved / "whole.ptmodel", expected)
    assert sys.modules.get("net") is before
