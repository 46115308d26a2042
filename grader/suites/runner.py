"""The judge: run the hidden suites against one submission and score them, here, where no student code runs.

    python -m grader.suites.runner --list [--homework compression|deploy|all] [--part PART]
    python -m grader.suites.runner SUBMISSION_DIR RESULTS_JSON [--homework ...] [--part PART]
                                   [--timeout SECONDS] [--isolation bwrap|basic] [--reference DIR]

``--list`` prints a JSON list of the tests: ``{"name", "part", "todo",
"max_score"}``. A run assembles the student's files of SUBMISSION_DIR and
the provided ones into a folder that becomes the student's box, runs pytest
in this process (the suites send the box requests and judge its answers),
and writes RESULTS_JSON as ``{"tests": [{"name", "part", "todo", "score",
"max_score", "output", "visibility"}, ...]}``: every test of the selection,
scored by this process alone. ``--homework`` picks Part 1's suites
(``compression``, the default), Part 2's (``deploy``) or both, one after the
other, each with its own box (``all``: what ``python -m grader grade`` runs
for a submission that holds ``deploy/``). The contract is described in
docs/GRADING-SUITES.md.
"""
import argparse
import io
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from grader.homework import OUTPUT_CHARACTERS, Limits
from grader.files import write_atomic
from grader.homework import DEPLOY_PART_POINTS, MCU_PART_POINTS, PART_POINTS
from grader.suites import DEFAULT_VISIBILITY, REPO, SUITES_DIR, VISIBILITIES
from grader.suites.submission import assemble

JUDGE_GRACE = 120.0
"""pytest-timeout's limit per test, beyond the box's own: only a fault of the judge itself can reach it."""
AUTOLOAD = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
DEPLOY_SUITES = SUITES_DIR / "deploy"
MCU_SUITES = SUITES_DIR / "mcu"
HOMEWORKS = {"compression": PART_POINTS, "deploy": DEPLOY_PART_POINTS, "mcu": MCU_PART_POINTS}
"""The suites of each homework and the points of its parts: Part 1 (compression, the suites of this folder),
Part 2 (deploy, the suites of ``deploy/``) and the microcontroller track (mcu, the suites of ``mcu/``)."""
ALL_PART_POINTS = {**PART_POINTS, **DEPLOY_PART_POINTS, **MCU_PART_POINTS}
ALL = "all"
"""Part 1 and Part 2, Part 1's tests first: what ``grade`` runs (the microcontroller track is graded on its own)."""
GRADED_TOGETHER = ("compression", "deploy")


def homeworks_of(homework: str, part: Optional[str] = None) -> Tuple[str, ...]:
    """The homeworks ``homework`` names (``ALL``: Part 1 and Part 2), narrowed to the one holding ``part`` if given."""
    chosen = GRADED_TOGETHER if homework == ALL else (homework,)
    return tuple(h for h in chosen if part is None or part in HOMEWORKS[h]) or chosen


def test_info(item) -> dict:
    """The listed fields of a collected test, from its ``part`` and ``points`` markers."""
    part, points = item.get_closest_marker("part"), item.get_closest_marker("points")
    if part is None or points is None or part.args[0] not in ALL_PART_POINTS:
        raise ValueError(f"{item.nodeid}: every suite test needs a valid part and a points marker")
    max_score = float(points.args[0])
    if not math.isfinite(max_score) or max_score <= 0:
        raise ValueError(f"{item.nodeid}: points must be a positive number")
    return {"name": item.nodeid, "part": part.args[0], "todo": points.kwargs["todo"], "max_score": max_score}


def truncate(text: str, limit: int = OUTPUT_CHARACTERS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


class Selection:
    """pytest plugin: keeps the tests of one part (all when ``part`` is None), ordered as ``PART_POINTS``."""

    def __init__(self, part: Optional[str], homework: str = "compression") -> None:
        self.part, self.homework = part, homework
        self.items: list = []

    def pytest_collection_modifyitems(self, config, items) -> None:
        order = list(HOMEWORKS[self.homework])
        keep = sorted((item for item in items if self.part is None or test_info(item)["part"] == self.part),
                      key=lambda item: order.index(test_info(item)["part"]))
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        self.items = keep


class Recorder(Selection):
    """pytest plugin: scores every test from pytest's own report of it. A test passes when its body returned."""

    def __init__(self, part: Optional[str], homework: str = "compression") -> None:
        super().__init__(part, homework)
        self.tests: List[dict] = []
        self.passed, self.failure, self.printed = False, None, ""

    def entry(self, item, passed: bool, message: str, printed: str = "") -> dict:
        """The results entry of one test."""
        info = test_info(item)
        checks = (item.obj.__doc__ or item.name).strip().splitlines()[0]
        if passed:
            output = f"Passed: {checks}"
        else:
            output = f"Checks: {checks}\n\nFailed: {message}"
            if printed.strip():
                output += f"\n\nYour code printed:\n{printed}"
        visibility = item.get_closest_marker("points").kwargs.get("visibility", DEFAULT_VISIBILITY)
        assert visibility in VISIBILITIES, visibility
        return {**info, "score": info["max_score"] if passed else 0.0, "output": truncate(output),
                "visibility": visibility}

    @staticmethod
    def describe(excinfo) -> str:
        """What went wrong, in the student's terms (never a line of the suites)."""
        error = excinfo.value
        if isinstance(error, (AssertionError, pytest.fail.Exception)):
            return str(error)
        return (f"the grader could not check what your code returned ({type(error).__name__}: "
                f"{str(error)[:300]})")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.passed, self.failure, self.printed = False, None, ""
        try:
            return (yield)
        finally:
            self.tests.append(self.entry(item, self.passed and self.failure is None, self.failure or "",
                                         self.printed))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when == "call":
            self.passed = report.passed
            self.printed = str(getattr((item.funcargs or {}).get("student"), "printed", ""))
        if report.failed and self.failure is None:
            self.failure = self.describe(call.excinfo)
        elif report.skipped and self.failure is None:  # e.g. onnx is not installed where the grader runs
            self.failure = f"the grader could not run this test here ({call.excinfo.value})"
        return report


def suite_paths(homework: str) -> List[str]:
    """pytest's paths for the suites of ``homework`` (Part 1's leave the other folders out)."""
    folders = {"deploy": DEPLOY_SUITES, "mcu": MCU_SUITES}
    if homework in folders:
        return [str(folders[homework])]
    return [str(SUITES_DIR), *(f"--ignore={folder}" for folder in folders.values())]


def run_pytest(arguments: List[str], plugin: Selection) -> Tuple[int, str]:
    """Run the suites in this process with ``plugin``; return pytest's exit code and its own report."""
    report = io.StringIO()
    saved_stdout, saved_autoload = sys.stdout, os.environ.get(AUTOLOAD)
    os.environ[AUTOLOAD] = "1"  # only the plugins named here, whatever else is installed
    sys.stdout = report
    try:
        code = pytest.main([*suite_paths(plugin.homework), "-c", str(SUITES_DIR / "pytest.ini"), "--rootdir", str(SUITES_DIR),
                            "-p", "pytest_timeout", "--capture=no", "-q", *arguments], plugins=[plugin])
    finally:
        sys.stdout = saved_stdout
        if saved_autoload is None:
            os.environ.pop(AUTOLOAD)
        else:
            os.environ[AUTOLOAD] = saved_autoload
    return int(code), report.getvalue()


def list_tests(part: Optional[str] = None, homework: str = "compression") -> List[dict]:
    """The tests of ``part`` (all parts of ``homework`` when None), as ``--list`` prints them; raises ``RuntimeError``."""
    if homework == ALL:
        return [test for one in homeworks_of(homework, part) for test in list_tests(part, one)]
    selection = Selection(part, homework)
    code, report = run_pytest(["--collect-only"], selection)
    if code != 0 or not selection.items:
        raise RuntimeError(f"the suites could not be collected (pytest exit code {code}):\n{report}")
    return [test_info(item) for item in selection.items]


def judge(submission: Path, part: Optional[str], limits: Limits, level: str,
          reference: Path = REPO / "solutions", homework: str = "compression") -> List[dict]:
    """Score every test of ``part`` (all of ``homework`` when None) on the submission folder; raises ``RuntimeError``."""
    if homework == ALL:
        return [test for one in homeworks_of(homework, part)
                for test in judge(submission, part, limits, level, reference, one)]
    recorder = Recorder(part, homework)
    with tempfile.TemporaryDirectory(prefix="grader-judge-") as temp:
        work = Path(temp) / "submission"
        assemble(submission, reference, work, homework)
        code, report = run_pytest(["--submission", str(work), "--reference", str(reference),
                                   "--isolation", level, "--limits", json.dumps(asdict(limits)),
                                   "--basetemp", str(Path(temp) / "pytest"),
                                   f"--timeout={limits.test_timeout_s + JUDGE_GRACE:g}"], recorder)
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        raise RuntimeError(f"the suites did not run (pytest exit code {code}):\n{report[-2000:]}")
    return recorder.tests


def main(argv: Optional[List[str]] = None) -> int:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    parser = argparse.ArgumentParser(prog="python -m grader.suites.runner", description=__doc__.splitlines()[0])
    parser.add_argument("submission", nargs="?", type=Path, help="folder holding net/ and pruning.py")
    parser.add_argument("results", nargs="?", type=Path, help="JSON file the results are written to")
    parser.add_argument("--list", action="store_true", help="print the tests as JSON and exit")
    parser.add_argument("--homework", choices=sorted([*HOMEWORKS, ALL]), default="compression",
                        help="which suites: Part 1 (compression, the default), Part 2 (deploy), the "
                             "microcontroller track (mcu) or Parts 1 and 2 (all)")
    parser.add_argument("--part", choices=sorted(ALL_PART_POINTS),
                        help="run only the tests of this part (of the chosen homework)")
    parser.add_argument("--timeout", type=float, default=Limits.test_timeout_s, help="seconds allowed per test")
    parser.add_argument("--isolation", choices=("bwrap", "basic"), default="bwrap",
                        help="the student's box: bubblewrap (default) or basic (no sandbox)")
    parser.add_argument("--reference", type=Path, default=REPO / "solutions",
                        help="reference solutions providing util.py and net/models.py")
    args = parser.parse_args(argv)
    try:
        if args.list:
            print(json.dumps(list_tests(args.part, args.homework), indent=1))
            return 0
        if args.submission is None or args.results is None:
            parser.error("give SUBMISSION_DIR and RESULTS_JSON, or --list")
        if not args.submission.is_dir():
            print(f"error: {args.submission} is not a folder", file=sys.stderr)
            return 2
        tests = judge(args.submission.resolve(), args.part, Limits(test_timeout_s=args.timeout), args.isolation,
                      args.reference.resolve(), args.homework)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    write_atomic(args.results, json.dumps({"tests": tests}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
