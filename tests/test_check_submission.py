"""The student-side ``check_submission.py`` and the visible tests shipped with the handout.

Everything runs in subprocesses inside a copy of the handout, as a student runs it.
"""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader import homework

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS, ASSIGNMENT = REPO / "solutions", REPO / "assignment"
PACKED = set(homework.STUDENT_FILES + homework.DEPLOY_STUDENT_FILES)


def python(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def handout(tmp_path_factory) -> Path:
    """A copy of the solved handout (solutions/ without generated files)."""
    folder = tmp_path_factory.mktemp("handout") / "assignment"
    shutil.copytree(SOLUTIONS, folder, ignore=shutil.ignore_patterns("__pycache__", "saves", "data"))
    return folder


def check(handout: Path, *args, tests: bool = False) -> subprocess.CompletedProcess:
    result = python(["check_submission.py", *args] + ([] if tests else ["--skip-tests"]), handout)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


# The model files of the tests, each built by a snippet that sets ``obj`` (run beside the handout's modules).
MODELS = {
    "good": "torch.manual_seed(0)\nobj = AlexNet()\nobj.prune_by_percentile(1)\n"
            "for p in obj.parameters():\n    p.data = (p.data * 256).round() / 256",  # a few shared values
    "half": "obj = AlexNet()\nobj.prune_by_percentile(1)\nobj = obj.half()\nobj.fc3.bias.data[0] = float('nan')",
    "nan": "obj = AlexNet()\nobj.prune_by_percentile(1)\nobj = obj.state_dict()\nobj['fc3.bias'][0] = float('nan')",
    "tiny": "obj = {'conv1.weight': torch.zeros(2, 3), 'extra': torch.ones(1)}",
    "evil": "import os\nclass Evil:\n    def __reduce__(self):\n        return (os.system, ('touch pwned',))\nobj = Evil()",
}


@pytest.fixture(scope="module")
def models(handout, tmp_path_factory):
    """Write every model of ``MODELS`` in one process; return their paths and AlexNet's shapes."""
    folder = tmp_path_factory.mktemp("models")
    script = ["import json, sys, torch", "sys.path.insert(0, '.')", "from net.models import AlexNet"]
    for name, code in MODELS.items():
        script += [code, f"torch.save(obj, {str(folder / name)!r} + '.ptmodel')"]
    script.append("print(json.dumps({k: list(v.shape) for k, v in AlexNet().state_dict().items()}))")
    result = python(["-c", "\n".join(script)], handout)
    assert result.returncode == 0, result.stderr
    return {name: folder / f"{name}.ptmodel" for name in MODELS}, json.loads(result.stdout.splitlines()[-1])


def write_log(folder: Path, *lines: str) -> Path:
    log = folder / "log.txt"
    log.write_text("".join(line + "\n" for line in lines))
    return log


def test_a_good_submission_is_packed_checked_and_copied(handout, models, tmp_path):
    paths, shapes = models
    log = write_log(tmp_path, "accuracy_after_weight_sharing 12.00 on 10000 test images",
                    "accuracy_after_huffman 74.90 on 10000 test images")
    result = check(handout, "108062345", "--model", paths["good"], "--out", tmp_path, "--log", log, tests=True)
    assert result.returncode == 0, result.stdout
    assert "visible tests: 9 passed" in result.stdout and "16 tensors" in result.stdout
    assert "accuracy: 74.90% on 10,000 test images" in result.stdout and "Ready: upload" in result.stdout
    assert "file compression rate (your encoder): " in result.stdout
    files = len(homework.DEPLOY_STUDENT_FILES)
    assert f"Part 2: packed {files} of {files} files" in result.stdout and "not written yet" not in result.stdout
    with zipfile.ZipFile(tmp_path / "108062345.zip") as archive:
        assert set(archive.namelist()) == PACKED
    assert (tmp_path / "108062345.ptmodel").read_bytes() == paths["good"].read_bytes()


GATE_CASES = [
    ((), "records no accuracy of the weight-shared model"),
    (("accuracy_after_weight_sharing 58.00 on 10000 test images",), f"is not above the gate of {homework.GATE}%"),
    (("accuracy_after_weight_sharing 80.00 on 200 test images",), "was measured on 200 test images"),
    (("accuracy_after_weight_sharing 80.00 on 10000 test images",), None),
    (("accuracy_after_weight_sharing 80.00 on 10000 test images", "accuracy_after_huffman 50.00 on 10000 test images"),
     f"is not above the gate of {homework.GATE}%"),  # the last line counts
]


@pytest.mark.parametrize("lines, reason", GATE_CASES)
def test_the_gate_reads_the_last_accuracy_logged_on_the_whole_test_set(tmp_path, lines, reason):
    import check_submission
    log = write_log(tmp_path, "initial_accuracy 90.00 on 10000 test images", *lines)
    try:
        problems = check_submission.gate_problems(*check_submission.logged_accuracy(log))
    except check_submission.CheckError as error:
        problems = [str(error)]
    assert any(reason in problem for problem in problems) if reason else problems == []


def test_ready_only_above_the_gate(handout, models, tmp_path):
    """The command itself refuses a model at the gate (the cases of the rule are above, without the command)."""
    lines, reason = GATE_CASES[1]
    log = write_log(tmp_path, "initial_accuracy 90.00 on 10000 test images", *lines)
    result = check(handout, "s5", "--model", models[0]["good"], "--out", tmp_path, "--log", log)
    assert result.returncode == 1 and reason in result.stdout and "Ready" not in result.stdout


@pytest.mark.parametrize("model, reason", [("half", "is torch.float16, expected torch.float32"),
                                           ("nan", "fc3.bias holds NaN or infinite values")])
def test_what_the_leaderboard_refuses_is_not_ready(handout, models, tmp_path, model, reason):
    log = write_log(tmp_path, "accuracy_after_weight_sharing 70.00 on 10000 test images")
    result = check(handout, "s6", "--model", models[0][model], "--out", tmp_path, "--log", log)
    assert result.returncode == 1 and reason in result.stdout and "Ready" not in result.stdout
    from grader.reference import reference
    from grader.safeload import SubmissionError, load_state_dict
    expected = {name: t.shape for name, t in reference().AlexNet().state_dict().items()}
    with pytest.raises(SubmissionError):  # the leaderboard refuses it too
        load_state_dict(models[0][model], expected)


def test_a_state_dict_of_the_wrong_shapes_is_reported(handout, models, tmp_path):
    result = check(handout, "s1", "--model", models[0]["tiny"], "--out", tmp_path)
    assert result.returncode == 1
    for text in ("conv1.weight has shape (2, 3), expected (64, 3, 11, 11)", "missing tensor fc3.bias",
                 "unexpected tensor extra", "Fix these before you upload"):
        assert text in result.stdout


def test_a_model_file_that_would_run_code_is_refused(handout, models, tmp_path):
    result = check(handout, "s2", "--model", models[0]["evil"], "--out", tmp_path)
    assert result.returncode == 1 and "was refused: it needs posix.system" in result.stdout
    assert not (handout / "pwned").exists() and not (tmp_path / "s2.ptmodel").exists()


def test_bad_input_gets_a_clear_message(handout, tmp_path):
    garbage = tmp_path / "garbage.ptmodel"
    garbage.write_bytes(b"not a model")
    result = check(handout, "s3", "--model", garbage, "--out", tmp_path)
    assert result.returncode == 1 and "is not a PyTorch model file" in result.stdout
    result = check(handout, "s3", "--model", tmp_path / "nowhere.ptmodel", "--out", tmp_path)
    assert result.returncode == 1 and "does not exist: run weight_share.py first" in result.stdout
    result = check(handout, "../s3", "--out", tmp_path)
    assert result.returncode == 2 and "is not a student id" in result.stdout


def test_a_missing_file_is_reported(handout, tmp_path):
    broken = tmp_path / "assignment"
    shutil.copytree(handout, broken)
    (broken / "pruning.py").unlink()
    result = check(broken, "s4", "--model", tmp_path / "none.ptmodel", "--out", tmp_path)
    assert result.returncode == 1 and "missing from" in result.stdout and "pruning.py" in result.stdout


def test_part_two_is_packed_and_what_it_lacks_is_said(handout, tmp_path):
    """A missing deploy/ file is a problem; stubs still there are named; no deploy/ at all: Part 2 not handed in."""
    student = tmp_path / "assignment"
    shutil.copytree(handout, student)
    shutil.copyfile(ASSIGNMENT / "deploy" / "distill.py", student / "deploy" / "distill.py")  # the stub, unwritten
    (student / "deploy" / "int8.py").unlink()
    result = check(student, "p2", "--model", tmp_path / "none.ptmodel", "--out", tmp_path)
    files = len(homework.DEPLOY_STUDENT_FILES)
    assert f"Part 2: packed {files - 1} of {files} files" in result.stdout
    assert "1 Part 2 TODOs are not written yet (their tests score 0): deploy/distill.py: distillation_loss" \
        in result.stdout
    assert "missing from" in result.stdout and "deploy/int8.py (each missing file costs" in result.stdout
    with zipfile.ZipFile(tmp_path / "p2.zip") as archive:
        assert set(archive.namelist()) == PACKED - {"deploy/int8.py"}
    shutil.rmtree(student / "deploy")
    result = check(student, "p3", "--model", tmp_path / "none.ptmodel", "--out", tmp_path)
    assert "Part 2: not handed in (there is no deploy/ folder here)" in result.stdout
    assert "deploy/" not in result.stdout.split("Fix these before you upload")[1]  # a note, not a problem
    with zipfile.ZipFile(tmp_path / "p3.zip") as archive:
        assert set(archive.namelist()) == set(homework.STUDENT_FILES)


def test_the_visible_tests_fail_on_the_untouched_skeleton():
    result = python(["-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], ASSIGNMENT)
    assert result.returncode == 1 and "9 failed" in result.stdout, result.stdout


def test_the_visible_tests_catch_the_percentile_misreading(handout, tmp_path):
    """q is the percentage KEPT (the original handout's rule); pruning q% instead fails before submission."""
    from grader import variants
    misread = tmp_path / "assignment"
    shutil.copytree(handout, misread)
    variants.apply("percentile_prunes_q", misread)
    result = python(["-m", "pytest", "tests/test_prune.py", "-q", "-p", "no:cacheprovider"], misread)
    assert result.returncode == 1 and "2 failed" in result.stdout, result.stdout
    assert "test_prune_by_percentile_keeps_q_percent_of_each_layer[30]" in result.stdout
