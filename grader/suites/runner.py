"""Run the hidden suites against one submission and write the results after every test.

    python -m grader.suites.runner --list [--part PART]
    python -m grader.suites.runner SUBMISSION_DIR RESULTS_JSON [--part PART] [--timeout SECONDS]
                                   [--resume] [--reference DIR]

``--list`` prints, without importing any student code, a JSON list of the
tests: ``{"name", "part", "todo", "max_score"}``. A run copies the student's
files of SUBMISSION_DIR and the provided ones of the reference folder into a
temporary folder, runs pytest in this process, and after every test
atomically rewrites RESULTS_JSON as ``{"tests": [{"name", "part", "todo",
"score", "max_score", "output", "visibility"}, ...]}``. A test missing from
that file (because the process died) is worth 0 to the caller, who may
also start the runner again with ``--resume`` to run only the tests still
missing. The contract is described in docs/GRADING-SUITES.md.
"""
import argparse
import faulthandler
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from grader.suites import DEFAULT_VISIBILITY, PART_POINTS, REPO, SUITES_DIR, VISIBILITIES
from grader.suites.submission import StudentCodeError, assemble, describe_exception

DEFAULT_TIMEOUT = 30.0
OUTPUT_LIMIT = 4000
"""Characters of student-facing output kept per test."""
PRINT_LIMIT = 1000
"""Characters of what the student's code printed that are shown with a failure."""
HARD_GRACE = 5.0
"""Seconds after the per-test timeout at which a test that could not be interrupted ends the process."""
AUTOLOAD = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
PROCESS_ENDED = ("the grading process ended during this test: your code crashed the interpreter, called "
                 "os._exit(), or got stuck where the time limit could not interrupt it")


def test_info(item) -> dict:
    """The listed fields of a collected test, from its ``part`` and ``points`` markers."""
    part, points = item.get_closest_marker("part"), item.get_closest_marker("points")
    if part is None or points is None or part.args[0] not in PART_POINTS:
        raise ValueError(f"{item.nodeid}: every suite test needs a valid part and a points marker")
    return {"name": item.nodeid, "part": part.args[0], "todo": points.kwargs["todo"],
            "max_score": float(points.args[0])}


def truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


class BoundedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters written to it and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.kept, self.size, self.dropped = limit, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        piece = text[:max(self.limit - self.size, 0)]
        if piece:
            self.kept.append(piece)
            self.size += len(piece)
        self.dropped += len(text) - len(piece)
        return len(text)

    def getvalue(self) -> str:
        more = f"\n... ({self.dropped} more characters)" if self.dropped else ""
        return "".join(self.kept) + more


class Selection:
    """pytest plugin: keeps the tests of one part (all when ``part`` is None), ordered as ``PART_POINTS``."""

    def __init__(self, part: Optional[str]) -> None:
        self.part = part
        self.items: list = []

    def wanted(self, item) -> bool:
        return self.part is None or test_info(item)["part"] == self.part

    def pytest_collection_modifyitems(self, config, items) -> None:
        order = list(PART_POINTS)
        keep = sorted(filter(self.wanted, items), key=lambda item: order.index(test_info(item)["part"]))
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        self.items = keep


class Recorder(Selection):
    """pytest plugin: scores every test and rewrites the results file before and after each one.

    Before a test runs, the file already holds it with 0 points and a message
    saying the process ended during it: if the student's code kills the
    process (a crash, ``os._exit``) or hangs where neither the timeout nor
    Python can interrupt it (then ``faulthandler`` ends the process after
    ``timeout + HARD_GRACE`` seconds), that is what the caller finds.
    """

    def __init__(self, part: Optional[str], results: Path, timeout: float, work: Path,
                 done: Optional[List[dict]] = None) -> None:
        super().__init__(part)
        self.results, self.timeout, self.work = results, timeout, work
        self.tests: List[dict] = list(done or [])
        self.passed, self.failure, self.timed_out = False, None, False
        self.null = open(os.devnull, "w")

    def wanted(self, item) -> bool:
        return super().wanted(item) and item.nodeid not in {test["name"] for test in self.tests}

    def write(self) -> None:
        """Atomically replace the results file with the tests scored so far."""
        temporary = self.results.with_name(self.results.name + ".part")
        temporary.write_text(json.dumps({"tests": self.tests}, indent=1))
        os.replace(temporary, self.results)

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

    def describe(self, excinfo) -> str:
        """What went wrong, in the student's terms (never a line of the suites)."""
        error = excinfo.value
        if isinstance(error, (AssertionError, StudentCodeError)):
            return str(error)
        if isinstance(error, pytest.fail.Exception):
            if "from pytest-timeout" in str(error):
                self.timed_out = True
                return (f"stopped after {self.timeout:g} seconds; these checks take well under a second, "
                        "so your code is probably stuck in a loop")
            return str(error)
        return f"your code raised {describe_exception(error, self.work)}"

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.passed, self.failure, self.timed_out = False, None, False
        self.tests.append(self.entry(item, False, PROCESS_ENDED))
        self.write()
        printed, saved = BoundedText(PRINT_LIMIT), (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = printed
        faulthandler.dump_traceback_later(self.timeout + HARD_GRACE, exit=True, file=self.null)
        try:
            return (yield)
        finally:
            faulthandler.cancel_dump_traceback_later()
            sys.stdout, sys.stderr = saved
            self.tests[-1] = self.entry(item, self.passed, self.failure or "",
                                        "" if self.timed_out else printed.getvalue())
            self.write()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when == "call" and report.passed:
            self.passed = True
        if report.failed and self.failure is None:
            self.failure = self.describe(call.excinfo)
        return report


def run_pytest(arguments: List[str], plugin: Selection) -> Tuple[int, str]:
    """Run the suites in this process with ``plugin``; return pytest's exit code and its own report.

    pytest's capturing is off: the ``Recorder`` catches what student code
    prints itself, keeping only the start of it, in memory.
    """
    report = io.StringIO()
    saved_stdout, saved_fd = sys.stdout, os.dup(1)
    saved_autoload = os.environ.get(AUTOLOAD)
    os.environ[AUTOLOAD] = "1"  # only the plugins named here, whatever else is installed
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # output written below Python (C code) goes nowhere
    sys.stdout = report
    try:
        code = pytest.main([str(SUITES_DIR), "-c", str(SUITES_DIR / "pytest.ini"), "--rootdir", str(SUITES_DIR),
                            "-p", "pytest_timeout", "--capture=no", "-q", *arguments], plugins=[plugin])
    finally:
        sys.stdout = saved_stdout
        if saved_autoload is None:
            os.environ.pop(AUTOLOAD)
        else:
            os.environ[AUTOLOAD] = saved_autoload
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(null)
    return int(code), report.getvalue()


def list_tests(part: Optional[str]) -> int:
    selection = Selection(part)
    code, report = run_pytest(["--collect-only"], selection)
    if code != 0 or not selection.items:
        print(f"error: the suites could not be collected (pytest exit code {code}):\n{report}", file=sys.stderr)
        return 3
    print(json.dumps([test_info(item) for item in selection.items], indent=1))
    return 0


def recorded(results: Path) -> List[dict]:
    """The tests an earlier, interrupted run already wrote to ``results`` (none if it is unreadable)."""
    try:
        tests = json.loads(results.read_text())["tests"]
        return [test for test in tests if isinstance(test, dict) and isinstance(test.get("name"), str)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def run(submission: Path, results: Path, part: Optional[str], timeout: float, reference: Path,
        resume: bool = False) -> int:
    if not submission.is_dir():
        print(f"error: {submission} is not a folder", file=sys.stderr)
        return 2
    temp = Path(tempfile.mkdtemp(prefix="grader-suites-"))
    here = os.getcwd()
    try:
        work, scratch = temp / "submission", temp / "scratch"
        assemble(submission, reference, work)
        scratch.mkdir()
        recorder = Recorder(part, results, timeout, work, recorded(results) if resume else None)
        recorder.write()
        os.chdir(scratch)  # whatever the student's code writes lands in the temporary folder
        code, report = run_pytest(["--work-dir", str(work), "--reference", str(reference),
                                   "--basetemp", str(temp / "pytest"), f"--timeout={timeout:g}"], recorder)
    finally:
        os.chdir(here)
        shutil.rmtree(temp, ignore_errors=True)
    finished = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) + ((pytest.ExitCode.NO_TESTS_COLLECTED,)
                                                                     if resume else ())
    if code not in finished:
        print(f"error: the suites did not run (pytest exit code {code}):\n{report}", file=sys.stderr)
        return 3
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    # One thread per grading process (several run side by side); numpy and torch are not loaded yet.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    parser = argparse.ArgumentParser(prog="python -m grader.suites.runner", description=__doc__.splitlines()[0])
    parser.add_argument("submission", nargs="?", type=Path, help="folder holding net/ and pruning.py")
    parser.add_argument("results", nargs="?", type=Path, help="JSON file the results are written to")
    parser.add_argument("--list", action="store_true", help="print the tests as JSON and exit")
    parser.add_argument("--part", choices=sorted(PART_POINTS), help="run only the tests of this part")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per test")
    parser.add_argument("--resume", action="store_true",
                        help="keep the tests RESULTS_JSON already holds (from a run whose process died) "
                             "and run only the others")
    parser.add_argument("--reference", type=Path, default=REPO / "solutions",
                        help="reference solutions providing util.py and net/models.py")
    args = parser.parse_args(argv)
    if args.list:
        return list_tests(args.part)
    if args.submission is None or args.results is None:
        parser.error("give SUBMISSION_DIR and RESULTS_JSON, or --list")
    return run(args.submission.resolve(), args.results.resolve(), args.part, args.timeout,
               args.reference.resolve(), args.resume)


if __name__ == "__main__":
    sys.exit(main())
