"""The Gradescope bundle (grader/gradescope.py): its contents, and run_autograder in a folder like /autograder."""
import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import torch

from grader import box, grade, gradescope, homework, measure
from tests.test_archives import make_zip, solution_files
from tests.test_leaderboard import shared_state
from tests.tinycifar import write_tiny_cifar

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return gradescope.build(tmp_path_factory.mktemp("bundle") / "autograder.zip")


def test_bundle_holds_scripts_judge_box_worker_suites_solutions_and_pinned_requirements(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in zf.infolist()}
        requirements = zf.read("requirements.txt").decode()
        run_autograder = zf.read("run_autograder").decode()
        setup = zf.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "grader/suites/runner.py", "grader/suites/conftest.py",
            "grader/box.py", "grader/judge.py", "grader/worker/serve.py", "grader/worker/ops.py",
            "grader/worker/protocol.py", "grader/archives.py", "grader/grade.py", "solutions/util.py",
            "solutions/net/prune.py"} <= names
    assert {"grader/suites/deploy/test_channels.py", "grader/suites/deploy/test_onnx.py", "grader/worker/deploy_ops.py",
            "solutions/deploy/channels.py", "solutions/deploy/legacy_quant.py"} <= names  # Part 2
    assert "grader/sandbox.py" not in names and "grader/variants.py" not in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert "torch==" in requirements and "scikit-learn==" in requirements and "pytest-timeout==" in requirements
    assert all(f"{name}==" in requirements for name in ("onnx", "onnxruntime", "onnxscript"))  # Part 2's box
    assert "--isolation auto" in run_autograder and "--total code" in run_autograder and "bubblewrap" in setup
    with zipfile.ZipFile(gradescope.build(tmp_path / "basic.zip", isolation="basic", total="deploy")) as zf:
        assert "--isolation basic" in zf.read("run_autograder").decode()
        assert "--total deploy" in zf.read("run_autograder").decode()
    assert gradescope.build(tmp_path / "again.zip").read_bytes() == bundle.read_bytes()  # reproducible


def grader_imports(source: str) -> set:
    """The ``grader`` modules a Python file imports, as paths in the bundle (``grader/box.py``...)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("grader.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "grader":
                found |= {f"grader.{alias.name}" for alias in node.names}
            elif node.module.startswith("grader."):
                found.add(node.module)
    return {name.replace(".", "/") for name in found}


def test_bundle_holds_every_grader_module_its_modules_import(bundle):
    with zipfile.ZipFile(bundle) as zf:
        sources = {name: zf.read(name).decode() for name in zf.namelist()
                   if name.startswith("grader/") and name.endswith(".py")}
    missing = {}
    for name, source in sources.items():
        for module in grader_imports(source):
            if f"{module}.py" not in sources and f"{module}/__init__.py" not in sources:
                missing.setdefault(name, []).append(module)
    assert missing == {}


def test_bundle_scripts_are_valid_bash(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path)
    for script in ("setup.sh", "run_autograder"):
        assert subprocess.run(["bash", "-n", str(tmp_path / script)]).returncode == 0


def test_run_autograder_grades_a_submission_like_gradescope(bundle, tmp_path):
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    (root / "submission").mkdir()
    make_zip(root / "submission" / "108062345.zip", solution_files())  # an uploaded archive, as Gradescope keeps it
    torch.save(shared_state(1, keep=0.01), root / "submission" / "108062345.ptmodel")
    write_tiny_cifar(root / "data", n_train=5, n_test=30)
    (root / "submission_metadata.json").write_text(json.dumps({"users": [{"sid": "108062345", "name": "A"}]}))
    env = {"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable,
           "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 90 and results["max_score"] == 90, results["output"]
    part1 = [t for t in results["tests"] if t["tags"][0] in homework.PART_NAMES]
    assert len(part1) >= 10 and all(t["score"] == t["max_score"] for t in part1)
    part2 = [t for t in results["tests"] if t["tags"][0] in homework.DEPLOY_PART_NAMES]  # no deploy/ handed in
    assert sum(t["max_score"] for t in part2) == homework.DEPLOY_POINTS and len(part1) + len(part2) == len(results["tests"])
    assert all(t["score"] == 0 and t["output"] == grade.DEPLOY_ABSENT for t in part2)
    assert grade.DEPLOY_ABSENT in results["output"]
    assert results["extra_data"]["student_id"] == "108062345" and results["extra_data"]["status"] == "ok"
    assert results["extra_data"]["isolation"] == box.strongest_level()[0]  # auto: the strongest box there
    assert {"name", "score", "max_score", "output", "visibility"} <= set(results["tests"][0])
    measured = measure.measure(root / "submission" / "108062345.ptmodel", "s", measure.CifarEvaluator(root / "data"))
    board = {item["name"]: item for item in results["leaderboard"]}  # Gradescope's format: name, value, order
    assert list(board)[0] == "compression rate (x)" and board["compression rate (x)"]["order"] == "desc"
    assert board["compression rate (x)"]["value"] == round(measured.entry().rate, 2) > 1
    assert board["accuracy (%)"]["value"] == round(measured.entry().accuracy, 2)
    assert board["compressed bytes"] == {"name": "compressed bytes", "value": measured.compressed_bytes,
                                         "order": "asc"}
    assert all(set(item) <= {"name", "value", "order"} for item in results["leaderboard"])


def test_a_part_two_bundle_scores_part_two_alone():
    """``--total deploy``: results.json's score is Part 2's own total (a Gradescope assignment of its own)."""
    tests = (grade.TestResult("a", "prune", "t", 70, 70), grade.TestResult("b", "channels", "t", 5, 12),
             grade.TestResult("c", "onnx", "t", 10, 10))
    results = grade.Results("s", "s.zip", "h", "v", "ok", "basic", tests)
    assert (gradescope.document_of(results)["score"], gradescope.document_of(results)["max_score"]) == (70, 70)
    document = gradescope.document_of(results, "deploy")
    assert (document["score"], document["max_score"]) == (15, 22) and len(document["tests"]) == 3


def test_leaderboard_field_without_a_model_or_with_two(tmp_path):
    assert gradescope.leaderboard_field(tmp_path, tmp_path) == []
    (tmp_path / "a.ptmodel").write_bytes(b"x")
    (tmp_path / "b.ptmodel").write_bytes(b"x")
    board = {item["name"]: item["value"] for item in gradescope.leaderboard_field(tmp_path, tmp_path)}
    assert board["compression rate (x)"] == 0 and "hand in one .ptmodel" in board[f"above the {homework.GATE}% gate"]


# --------------------------------------------------------------------------- Gradescope's base images


def test_every_base_image_has_pins_and_setup_refuses_other_pythons(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "source")
    for image, python in gradescope.IMAGES.items():
        lines = (tmp_path / "source" / "requirements" / f"py{python}.txt").read_text().splitlines()
        names = [line.split("==")[0] for line in lines if "==" in line]
        assert names == list(gradescope.PINNED), image
    assert gradescope.pins("3.10")["numpy"] != gradescope.pins()["numpy"]  # numpy 2.4 has no Python 3.10 wheel
    fake = tmp_path / "bin"  # an image whose python3 is 3.8 (Ubuntu 20.04): apt-get does nothing here
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    (fake / "python3").write_text("#!/bin/sh\necho 3.8\n")
    for tool in ("apt-get", "python3"):
        (fake / tool).chmod(0o755)
    script = (tmp_path / "source" / "setup.sh").read_text().replace("/autograder/source", str(tmp_path / "source"))
    done = subprocess.run(["bash", "-c", script], env={"PATH": f"{fake}:/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "python3 is 3.8" in done.stderr and "Ubuntu 22.04 or Ubuntu 24.04" in done.stderr


PARSE_EVERY_FILE = """
import pathlib, sys
bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    try:
        compile(path.read_text(), str(path), "exec", dont_inherit=True)
    except SyntaxError as error:
        bad.append(f"{path.relative_to(sys.argv[1])}:{error.lineno}: {error.msg}")
print("\\n".join(bad))
"""


def interpreter(version: str):
    """A working ``python<version>`` on this machine (on PATH, or a pyenv build), or None."""
    candidates = [shutil.which(f"python{version}"), f"/usr/bin/python{version}",
                  *sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        try:
            done = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return str(candidate)
    return None


@pytest.mark.parametrize("image", sorted(gradescope.IMAGES))
def test_every_file_of_the_bundle_parses_under_the_image_python(bundle, tmp_path, image):
    """The grader, suites and handout the bundle carries are valid syntax for each image's python3 (where that
    interpreter is installed here): no construct newer than the image's Python reaches Gradescope."""
    python = interpreter(gradescope.IMAGES[image])
    if python is None:
        pytest.skip(f"python{gradescope.IMAGES[image]} is not installed here")
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "source")
    done = subprocess.run([python, "-c", PARSE_EVERY_FILE, str(tmp_path / "source")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def pypi_reachable() -> bool:
    import socket
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.network
@pytest.mark.skipif(not pypi_reachable(), reason="needs PyPI (network)")
@pytest.mark.heavy
def test_every_pin_has_a_wheel_for_each_image_python(tmp_path):
    """pip resolves each pin as a manylinux wheel for each image's Python (metadata only: --dry-run, no download)."""
    resolving = {python: subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--only-binary=:all:", "--quiet",
         "--python-version", python, "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
         "--target", str(tmp_path / python), *(f"{name}=={version}" for name, version in gradescope.pins(python).items())],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for python in sorted(gradescope.PINS_BY_PYTHON)}
    failed = {python: run.communicate(timeout=300)[1][-1500:] for python, run in resolving.items()}
    assert {python: error for python, error in failed.items() if resolving[python].returncode} == {}
