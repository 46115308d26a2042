"""The student-side ``check_submission.py`` and the visible tests shipped with the handout.

Everything runs in subprocesses inside a copy of the handout, as a student runs it.
"""
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS, ASSIGNMENT = REPO / "solutions", REPO / "assignment"
PACKED = {"net/__init__.py", "net/huffmancoding.py", "net/models.py", "net/prune.py", "net/quantization.py",
          "pruning.py"}


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
    "good": "torch.manual_seed(0)\nobj = AlexNet()\nobj.prune_by_percentile(10)",
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


def test_a_good_submission_is_packed_checked_and_copied(handout, models, tmp_path):
    paths, shapes = models
    result = check(handout, "108062345", "--model", paths["good"], "--out", tmp_path, tests=True)
    assert result.returncode == 0, result.stdout
    assert "visible tests: 7 passed" in result.stdout and "16 tensors" in result.stdout
    with zipfile.ZipFile(tmp_path / "108062345.zip") as archive:
        assert set(archive.namelist()) == PACKED
    assert (tmp_path / "108062345.ptmodel").read_bytes() == paths["good"].read_bytes()
    spec = importlib.util.spec_from_file_location("_check_submission", SOLUTIONS / "check_submission.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert {name: list(shape) for name, shape in module.EXPECTED_SHAPES.items()} == shapes


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


def test_the_visible_tests_fail_on_the_untouched_skeleton():
    result = python(["-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], ASSIGNMENT)
    assert result.returncode == 1 and "7 failed" in result.stdout, result.stdout
