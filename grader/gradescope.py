"""The Gradescope autograder: build its bundle here, run the same suites there.

    python -m grader gradescope --out autograder.zip         # build the bundle (upload it to Gradescope)
    python -m grader gradescope --run [--root /autograder]   # what run_autograder calls on Gradescope

The bundle holds ``setup.sh`` (installs Python, bsdtar and the pinned
requirements once per image), ``run_autograder`` (grades
``$AUTOGRADER_ROOT/submission`` and writes
``$AUTOGRADER_ROOT/results/results.json``; the root defaults to
``/autograder``), ``requirements.txt`` (the versions installed here), the
grader package with the hidden suites, and the reference solutions. A
submission is graded exactly as ``python -m grader grade`` grades one student.
"""
import argparse
import json
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List

from grader import grade, homework, judge
from grader.files import write_atomic
from grader.homework import Limits

REPO = grade.REPO
GRADER_MODULES = ("__init__.py", "__main__.py", "cli.py", "assign.py", "archives.py", "files.py", "box.py", "judge.py",
                  "seccomp.py", "grade.py", "gradescope.py", "handout.py", "homework.py", "reference.py",
                  "resubmit.py", "roster.py")
GRADER_PACKAGES = ("suites", "worker")
PINNED = ("torch", "numpy", "scipy", "scikit-learn", "tqdm", "pytest", "pytest-timeout")
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip python3-venv libarchive-tools bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --no-cache-dir -r /autograder/source/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: it grades $AUTOGRADER_ROOT/submission
# and writes $AUTOGRADER_ROOT/results/results.json (the root defaults to /autograder).
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
[ -x "$PYTHON" ] || PYTHON=python3
cd "$ROOT/source"
exec "$PYTHON" -m grader gradescope --run --root "$ROOT" --isolation {isolation}
"""


def pinned_requirements() -> str:
    """requirements.txt with the exact versions installed here (CPU wheels of torch)."""
    lines = ["# The versions the grader was tested with (python -m grader gradescope).",
             f"--extra-index-url {TORCH_INDEX}"]
    for name in PINNED:
        version = metadata.version(name).split("+")[0]
        lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def bundle_files(repo: Path = REPO, isolation: str = "auto") -> Dict[str, bytes]:
    """Path in the bundle -> contents: scripts, requirements, grader package, suites, worker, reference solutions."""
    from grader.assign import source_files
    files = {"setup.sh": SETUP_SH.encode(), "run_autograder": RUN_AUTOGRADER.format(isolation=isolation).encode(),
             "requirements.txt": pinned_requirements().encode()}
    for name in GRADER_MODULES:
        files[f"grader/{name}"] = (repo / "grader" / name).read_bytes()
    for package in GRADER_PACKAGES:
        folder = repo / "grader" / package
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"grader/{package}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    for relative in source_files(repo / "solutions"):
        files[f"solutions/{relative.as_posix()}"] = (repo / "solutions" / relative).read_bytes()
    return files


def build(out: Path, repo: Path = REPO, isolation: str = "auto") -> Path:
    """Write the bundle to ``out`` (byte-identical for identical sources)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in sorted(bundle_files(repo, isolation).items()):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            executable = name in ("setup.sh", "run_autograder")
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, data)
    return out


def _student(root: Path) -> str:
    """The student's id from Gradescope's submission_metadata.json, else ``submission``."""
    try:
        users = json.loads((root / "submission_metadata.json").read_text())["users"]
        return homework.student_id(str(users[0].get("sid") or users[0].get("email") or "submission"))
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "submission"


def run(root: Path, limits: Limits, isolation: str) -> int:
    """Grade ``root/submission`` and write ``root/results/results.json``."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    try:
        setup = grade.make_setup(limits, isolation)
        document = grade.grade_one(_student(root), [root / "submission"], setup).to_gradescope()
    except grade.GradingError as error:
        document = {"score": 0.0, "output": f"The autograder could not run: {error}", "tests": []}
    finally:
        judge.shutdown()
    write_atomic(results / "results.json", json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(document["output"])
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader gradescope", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("autograder.zip"), help="bundle to write (autograder.zip)")
    parser.add_argument("--run", action="store_true", help="grade the submission in --root (inside Gradescope)")
    parser.add_argument("--root", type=Path, default=Path("/autograder"), help="Gradescope's folder (with --run)")
    grade.add_limit_options(parser)
    args = parser.parse_args(argv)
    if args.run:
        return run(args.root, grade.limits_of(args), args.isolation)
    path = build(args.out, isolation=args.isolation)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB): upload it as the autograder of a Gradescope "
          "programming assignment", file=sys.stderr)
    return 0
