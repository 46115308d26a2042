"""The Gradescope bundle (grader/gradescope.py): its contents, and run_autograder in a folder like /autograder."""
import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader import box, gradescope
from tests.test_archives import make_zip, solution_files

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
    assert "grader/sandbox.py" not in names and "grader/variants.py" not in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert "torch==" in requirements and "scikit-learn==" in requirements and "pytest-timeout==" in requirements
    assert "--isolation auto" in run_autograder and "bubblewrap" in setup
    with zipfile.ZipFile(gradescope.build(tmp_path / "basic.zip", isolation="basic")) as zf:
        assert "--isolation basic" in zf.read("run_autograder").decode()
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
    (root / "submission_metadata.json").write_text(json.dumps({"users": [{"sid": "108062345", "name": "A"}]}))
    env = {"PATH": os.environ["PATH"], "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable,
           "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 90 and results["max_score"] == 90, results["output"]
    assert len(results["tests"]) >= 10 and all(t["score"] == t["max_score"] for t in results["tests"])
    assert results["extra_data"]["student_id"] == "108062345" and results["extra_data"]["status"] == "ok"
    assert results["extra_data"]["isolation"] == box.strongest_level()[0]  # auto: the strongest box there
    assert {"name", "score", "max_score", "output", "visibility"} <= set(results["tests"][0])
