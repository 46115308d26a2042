"""End to end: the three scripts of solutions/ and of the untouched assignment/ on a tiny CIFAR-10.

Each variant runs in a temporary copy of its folder, in its own processes
(so the two ``net`` packages never meet). The two pipelines run side by side
to keep the file's wall time down.
"""
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import homework
from pruning import DEFAULT_LAYER_KEEP
from tests.conftest import ASSIGNMENT, SOLUTIONS, run_python
from tests.tinycifar import write_tiny_cifar

NO_NETWORK = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
ENV = dict(NO_NETWORK, OMP_NUM_THREADS="1")  # two pipelines share the cores
STEPS = [("pruning.py", "--epochs", "1", "--retrain-epochs", "1"), ("weight_share.py",), ("huffman_encode.py",)]
SAVES = ["initial_model.ptmodel", "model_after_retraining.ptmodel", "model_after_weight_sharing.ptmodel"]
LOG_KEYS = ["initial_accuracy", "accuracy_after_pruning", "accuracy_after_retraining",
            "accuracy_after_weight_sharing", "compression", "accuracy_after_huffman"]
VARIANTS = {"solutions": SOLUTIONS, "assignment": ASSIGNMENT}


def run_pipeline(variant: str, folder: Path, data: Path):
    shutil.copytree(VARIANTS[variant], folder, ignore=shutil.ignore_patterns(
        "saves", "data", "encodings", "__pycache__", "log.txt", "*.ptmodel"))
    common = ["--data-dir", data, "--subset", "200", "--batch-size", "50", "--device", "cpu"]
    results = []
    for step in STEPS:
        results.append(run_python([*step, *common], cwd=folder, env=ENV))
        if results[-1].returncode != 0:
            break
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run both pipelines (in parallel) and the missing-data case; map variant -> (folder, results)."""
    root = tmp_path_factory.mktemp("scripts")
    data = write_tiny_cifar(root / "data", n_train=200, n_test=100)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_pipeline, name, root / name, data) for name in VARIANTS}
        (root / "nodata").mkdir()
        futures["missing-data"] = pool.submit(
            run_python, ["pruning.py", "--data-dir", root / "nodata" / "data", "--device", "cpu"],
            cwd=SOLUTIONS, env=ENV, timeout=120)
        return {name: (root / name, future.result()) for name, future in futures.items()}


def read_log(folder: Path):
    entries = {}
    for line in (folder / "log.txt").read_text().splitlines():
        key, _, value = line.partition(" ")
        entries[key] = value
    return entries


def describe(results):
    return "\n".join(f"$ {' '.join(r.args[1:3])} -> {r.returncode}\n{r.stderr[-3000:]}" for r in results)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_runs_and_writes_its_files(runs, variant):
    """pruning.py, weight_share.py and huffman_encode.py exit 0 and write saves/, encodings/ and log.txt."""
    folder, results = runs[variant]
    assert [r.returncode for r in results] == [0, 0, 0], describe(results)
    for name in SAVES:
        assert (folder / "saves" / name).is_file(), name
    assert any((folder / "encodings").iterdir())
    log = read_log(folder)
    assert list(log) == LOG_KEYS
    # The model decoded from encodings/ is the shared model, so it scores exactly the same.
    assert log["accuracy_after_huffman"] == log["accuracy_after_weight_sharing"]


def load(folder: Path, name: str):
    return torch.load(folder / "saves" / name, map_location="cpu", weights_only=False)


def test_solutions_prune_share_and_encode(runs):
    """Reference run: the course's per-layer sparsity, at most 32 shared values per layer, a real compression."""
    folder, results = runs["solutions"]
    assert [r.returncode for r in results] == [0, 0, 0], describe(results)
    retrained, shared = load(folder, SAVES[1]), load(folder, SAVES[2])
    for name, module in retrained.prunable_layers():
        weight = module.weight.data
        expected = DEFAULT_LAYER_KEEP[name] / 100 * weight.numel()
        assert abs(int((weight != 0).sum()) - expected) <= 1, name
        after = shared.get_submodule(name).weight.data
        assert torch.equal(after == 0, weight == 0), name
        assert len(np.unique(after[after != 0].numpy())) <= 32, name
    total = results[2].stdout.split("total")[-1].split()
    assert total[1] == "81378600" and float(total[3].rstrip("x")) > 50


def test_skeleton_flags_unencoded_conv_layers(runs):
    """Untouched skeleton: nothing is pruned, and the table marks the five conv weights 'not implemented'."""
    folder, results = runs["assignment"]
    assert [r.returncode for r in results] == [0, 0, 0], describe(results)
    alive = [int(n) for n in re.findall(r"^alive: (\d+)", results[0].stdout, re.MULTILINE)]
    assert len(alive) == 3 and alive[0] == alive[1] > 20_000_000   # before and after "pruning"
    flagged = [line.split()[0] for line in results[2].stdout.splitlines() if "not implemented" in line]
    assert flagged == [f"conv{i}.weight" for i in range(1, 6)]
    assert "WARNING: pruning changed nothing" in results[0].stderr
    unshared = re.findall(r"^WARNING: (\w+) still holds [0-9,]+ distinct non-zero values", results[1].stdout,
                          re.MULTILINE)
    assert unshared == [f"conv{i}" for i in range(1, 6)]  # the conv TODO of weight sharing; fc is provided


@pytest.mark.parametrize("text, expected", [
    ("5", dict.fromkeys(homework.LAYERS, 5)), ("conv1=8, fc2=4", {"conv1": 8, "fc2": 4})])
def test_bit_widths_per_layer(text, expected):
    from weight_share import parse_bits
    assert parse_bits(text) == expected


@pytest.mark.parametrize("text, message", [
    ("five", "expected a number of bits such as 5"), ("conv9=4", "unknown layer(s) ['conv9']"),
    ("fc1=0", "fc1 has 0 bits; use 1 to 16"), ("conv1=8,=3", "expected a number of bits")])
def test_bad_bit_widths_are_refused_with_the_reason(text, message):
    from weight_share import parse_bits
    with pytest.raises(ValueError) as error:
        parse_bits(text)
    assert message in str(error.value)


def test_missing_data_without_network_is_a_short_error(runs):
    """No CIFAR-10 and no network: exit code 1, an 'error:' message saying where to put the data, no traceback."""
    _, result = runs["missing-data"]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert "cifar-10-batches-py" in result.stderr and "--data-dir" in result.stderr
    assert not re.search(r"^\s+File ", result.stderr, re.MULTILINE)
