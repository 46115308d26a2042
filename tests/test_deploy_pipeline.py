"""``python -m deploy.pipeline``: the untouched skeleton runs and names each missing TODO; the reference (slow)
runs every step and its ONNX models agree with PyTorch."""
import re

import pytest

from tests.conftest import ASSIGNMENT, SOLUTIONS, run_python
from tests.tinycifar import write_tiny_cifar

ENV = {"OMP_NUM_THREADS": "1", **{name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy")}}


def pipeline(folder, tmp_path, *extra):
    data = write_tiny_cifar(tmp_path / "data", n_train=40, n_test=20)
    return run_python(["-m", "deploy.pipeline", "--data-dir", data, "--saves-dir", tmp_path / "saves",
                       "--log", tmp_path / "log.txt", "--batch-size", "10", *extra], cwd=folder, env=ENV, timeout=600)


def test_untouched_skeleton_runs_and_says_which_todo_is_missing(tmp_path):
    done = pipeline(ASSIGNMENT, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "TODO deploy/channels.py: filter_scores is not written yet" in done.stdout
    assert re.search(r"skipped: TODO deploy/lowrank.py: \w+ is not written yet", done.stdout)
    assert "TODO deploy/int8.py: quantize_static is not written yet" in done.stdout
    assert "TODO deploy/onnx_int8.py: export_onnx is not written yet" in done.stdout
    assert re.search(r"^dense +accuracy", done.stdout, re.M)


def test_bad_arguments_are_one_line_errors(tmp_path):
    done = pipeline(SOLUTIONS, tmp_path, "--keep-channels", "2")
    assert done.returncode != 0 and done.stderr.strip() == "error: --keep-channels and --energy must be in (0, 1]"


@pytest.mark.slow
def test_reference_pipeline_runs_every_step(tmp_path):
    pytest.importorskip("onnxruntime")
    done = pipeline(SOLUTIONS, tmp_path, "--distill-epochs", "1")
    assert done.returncode == 0, done.stderr
    assert "skipped" not in done.stdout
    for name in ("dense", "channel_pruned", "low_rank", "int8_torch", "int8_dynamic", "model", "model_int8"):
        assert re.search(rf"^{name} +accuracy", done.stdout, re.M), name
    agreement = float(re.search(r"^model .*top-1 agreement ([0-9.]+)", done.stdout, re.M).group(1))
    assert agreement == 1.0
