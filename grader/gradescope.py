"""The Gradescope autograder: build its bundle here, run the same suites there.

    python -m grader gradescope --out autograder.zip         # build the bundle (upload it to Gradescope)
    python -m grader gradescope --out part2.zip --total deploy   # a bundle whose score is Part 2's total
    python -m grader gradescope --run [--root /autograder]   # what run_autograder calls on Gradescope

The bundle holds ``setup.sh`` (installs bsdtar, bubblewrap and the pinned
requirements for the image's ``python3`` once per image, and the CIFAR-10
test set), ``run_autograder`` (grades ``$AUTOGRADER_ROOT/submission`` and
writes ``$AUTOGRADER_ROOT/results/results.json``; the root defaults to
``/autograder``), ``requirements.txt`` (the versions installed here) and
``requirements/py3.X.txt`` (the pins for each base image's Python,
``IMAGES``), the grader package with the hidden suites, and the reference
solutions. A submission is graded exactly as ``python -m grader grade``
grades one student, Part 2 (``deploy/``) included: its tests are in
results.json with their points, and its pins (onnx, onnxruntime, onnxscript)
are in the requirements. results.json's ``score`` is the code total
(``Results.score``: Part 1's, plus Part 2's when ``DEPLOY_SCORING`` is
``"bonus"``); with ``--total deploy`` it is Part 2's own total, for a second
Gradescope assignment when Part 2 is a separate grade. A ``.ptmodel`` handed
in with it is measured as the leaderboard measures one, and its figures go
into results.json's ``leaderboard`` field (Gradescope's live leaderboard).
"""
import argparse
import json
import re
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
                  "resubmit.py", "roster.py", "shards.py")
GRADER_PACKAGES = ("suites", "worker")
MEASURE_MODULES = ("measure.py", "ranking.py", "safeload.py")
"""What measuring a .ptmodel needs (the leaderboard field), besides what grading needs."""
PINNED = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "tqdm", "pytest", "pytest-timeout",
          "onnx", "onnxruntime", "onnxscript")
"""What the judge and the box import; the last three are Part 2's (``requirements-deploy.txt``): where they are not
installed here, their versions come from ``constraints.txt``."""
TOTALS = ("code", "deploy")
"""What results.json's ``score`` is: the code total (``Results.score``) or Part 2's own total."""
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
IMAGES = {"Ubuntu 22.04": "3.10", "Ubuntu 24.04": "3.12"}
"""Gradescope's base images the bundle installs on, and their ``python3``. Older ones (18.04: 3.6, 20.04: 3.8)
have a Python no torch 2.6+ wheel exists for."""
PINS_BY_PYTHON = {"3.10": {"numpy": "2.2.6", "scipy": "1.15.3", "scikit-learn": "1.7.2", "onnxruntime": "1.23.2"},
                  "3.12": {}}
"""Where an image's Python has no wheel of a version installed here, the newest release that has one (found with
``pip download --no-deps --only-binary=:all: --python-version 3.10 NAME==VERSION``; numpy 2.3, scipy 1.16 and
scikit-learn 1.8 need Python 3.11, onnxruntime 1.24 too). ``tests/test_gradescope.py`` checks every pin resolves
(with network)."""
DATA = "/autograder/data"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip python3-venv libarchive-tools bubblewrap
PY=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
REQUIREMENTS=/autograder/source/requirements/py$PY.txt
if [ ! -f "$REQUIREMENTS" ]; then
    echo "error: this base image's python3 is $PY; the grader has pins for {pythons} only." >&2
    echo "Pick the base image {images} on Gradescope's Configure Autograder page." >&2
    exit 1
fi
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --no-cache-dir -r "$REQUIREMENTS"
# The CIFAR-10 test set, for the leaderboard figures of a handed-in .ptmodel
cd /autograder/source
/autograder/venv/bin/python -c 'from grader.reference import reference; reference().util.load_cifar10("{data}", train=False)'
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: it grades $AUTOGRADER_ROOT/submission
# and writes $AUTOGRADER_ROOT/results/results.json (the root defaults to /autograder).
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}}"
[ -x "$PYTHON" ] || PYTHON=python3
cd "$ROOT/source"
exec "$PYTHON" -m grader gradescope --run --root "$ROOT" --data-dir "$ROOT/data" --isolation {isolation} --total {total}
"""


def _version(name: str) -> str:
    """The version of ``name`` installed here, else the one ``constraints.txt`` pins (Part 2's are optional)."""
    try:
        return metadata.version(name).split("+")[0]
    except metadata.PackageNotFoundError:
        pinned = re.search(rf"^{re.escape(name)}==([^\s#]+)", (REPO / "constraints.txt").read_text(), re.MULTILINE)
        if pinned is None:
            raise
        return pinned.group(1)


def pins(python: str = "") -> Dict[str, str]:
    """The exact version of each pinned package: the ones installed here, or those for an image's ``python``."""
    here = {name: _version(name) for name in PINNED}
    return {**here, **PINS_BY_PYTHON[python]} if python else here


def pinned_requirements(python: str = "") -> str:
    """A requirements file with exact versions (CPU wheels of torch): those installed here, or those for
    ``python`` (``PINS_BY_PYTHON``)."""
    which = f"for Python {python} ({', '.join(i for i, v in IMAGES.items() if v == python)})" if python \
        else "the grader was tested with"
    lines = [f"# The versions {which} (python -m grader gradescope).", f"--extra-index-url {TORCH_INDEX}"]
    lines += [f"{name}=={version}" for name, version in pins(python).items()]
    return "\n".join(lines) + "\n"


def setup_script() -> str:
    return SETUP_SH.format(pythons=", ".join(sorted(PINS_BY_PYTHON)), data=DATA,
                           images=" or ".join(IMAGES))


def bundle_files(repo: Path = REPO, isolation: str = "auto", total: str = "code") -> Dict[str, bytes]:
    """Path in the bundle -> contents: scripts, requirements, grader package, suites, worker, reference solutions."""
    from grader.assign import source_files
    files = {"setup.sh": setup_script().encode(),
             "run_autograder": RUN_AUTOGRADER.format(isolation=isolation, total=total).encode(),
             "requirements.txt": pinned_requirements().encode()}
    files.update({f"requirements/py{python}.txt": pinned_requirements(python).encode() for python in PINS_BY_PYTHON})
    for name in GRADER_MODULES + MEASURE_MODULES:
        files[f"grader/{name}"] = (repo / "grader" / name).read_bytes()
    for package in GRADER_PACKAGES:
        folder = repo / "grader" / package
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"grader/{package}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    for relative in source_files(repo / "solutions"):
        files[f"solutions/{relative.as_posix()}"] = (repo / "solutions" / relative).read_bytes()
    return files


def build(out: Path, repo: Path = REPO, isolation: str = "auto", total: str = "code") -> Path:
    """Write the bundle to ``out`` (byte-identical for identical sources)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in sorted(bundle_files(repo, isolation, total).items()):
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


def leaderboard_field(submission: Path, data_dir: Path, gate: str = homework.GATE) -> List[dict]:
    """Gradescope's ``leaderboard`` entries for the ``.ptmodel`` in ``submission`` (none when there is none):
    measured as ``python -m grader leaderboard`` measures one (safe load, reference Huffman encoder, the test set
    in ``data_dir``). Compression rate first: it is what the ranking sorts by, above the gate."""
    models = sorted(p for p in submission.glob(f"*{homework.MODEL_SUFFIX}"))
    if not models:
        return []
    from grader.measure import CifarEvaluator, Measurement, measure
    from grader.ranking import passes_gate
    if len(models) > 1:
        result = Measurement("submission", problem=f"invalid: hand in one {homework.MODEL_SUFFIX}, not "
                                                   f"{len(models)} ({', '.join(p.name for p in models)})")
    elif models[0].is_symlink() or not models[0].is_file():
        result = Measurement("submission", problem=f"invalid: {models[0].name} must be a regular file")
    else:
        try:
            result = measure(models[0], "submission", CifarEvaluator(data_dir))
        except Exception as error:  # noqa: BLE001 - the code's grade must still be written
            result = Measurement("submission", problem=f"not measured: {type(error).__name__}: {error}")
    entry = result.entry()
    above = not result.problem and passes_gate(entry.correct, entry.total, gate)
    return [{"name": "compression rate (x)", "value": round(entry.rate, 2), "order": "desc"},
            {"name": "accuracy (%)", "value": round(entry.accuracy, 2), "order": "desc"},
            {"name": "compressed bytes", "value": entry.compressed_bytes, "order": "asc"},
            {"name": f"above the {gate}% gate", "value": "yes" if above else (result.problem[:120] or "no")}]


def document_of(results: grade.Results, total: str = "code") -> dict:
    """results.json for ``results``: its ``score`` and ``max_score`` are the code total's, or Part 2's own."""
    document = results.to_gradescope()
    if total == "deploy":
        document.update(score=results.deploy_score, max_score=results.deploy_max)
    return document


def run(root: Path, limits: Limits, isolation: str, data_dir: Path = Path(DATA), total: str = "code") -> int:
    """Grade ``root/submission`` and write ``root/results/results.json`` (with the leaderboard's figures when a
    ``.ptmodel`` was handed in)."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    try:
        setup = grade.make_setup(limits, isolation)
        document = document_of(grade.grade_one(_student(root), [root / "submission"], setup), total)
    except grade.GradingError as error:
        document = {"score": 0.0, "output": f"The autograder could not run: {error}", "tests": []}
    finally:
        judge.shutdown()
    board = leaderboard_field(root / "submission", data_dir)
    if board:
        document["leaderboard"] = board
    write_atomic(results / "results.json", json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(document["output"])
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader gradescope", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("autograder.zip"), help="bundle to write (autograder.zip)")
    parser.add_argument("--run", action="store_true", help="grade the submission in --root (inside Gradescope)")
    parser.add_argument("--root", type=Path, default=Path("/autograder"), help="Gradescope's folder (with --run)")
    parser.add_argument("--data-dir", type=Path, default=Path(DATA),
                        help="holds cifar-10-batches-py/ (with --run: for the leaderboard figures of a .ptmodel)")
    parser.add_argument("--total", choices=TOTALS, default="code",
                        help="results.json's score: the code total (Part 1; plus Part 2 when it is a bonus) or "
                             "Part 2's own total (deploy), for a Gradescope assignment of Part 2 alone")
    grade.add_limit_options(parser)
    args = parser.parse_args(argv)
    if args.run:
        return run(args.root, grade.limits_of(args), args.isolation, args.data_dir, args.total)
    path = build(args.out, isolation=args.isolation, total=args.total)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB): upload it as the autograder of a Gradescope "
          "programming assignment", file=sys.stderr)
    return 0
