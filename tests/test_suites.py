"""The hidden grading suites: the reference scores 90, the skeleton 0, every buggy variant loses points.

Every case is one run of the judge's command line (``python -m grader.suites.runner``),
whose student code runs in its own box (``grader/box.py``), as the batch grader
runs it (see ``Runs``). All runs start together, two at a time, when the first
test needs one.
"""
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from grader import box, variants
from grader.homework import PART_POINTS
from grader.suites import VISIBILITIES
from grader.homework import OUTPUT_CHARACTERS
from grader.homework import STUDENT_FILES

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS, ASSIGNMENT = REPO / "solutions", REPO / "assignment"
RUNNER = [sys.executable, "-m", "grader.suites.runner"]
ISOLATION = box.strongest_level()[0]
"""The box every run uses: bubblewrap where it works, as ``grade`` would choose."""

CRASH_AND_PRINT = '''

def huffman_encode_conv(param, name, directory, _encode=huffman_encode_conv):
    print("x" * 5_000_000)
    return _encode(param, name, directory)


def huffman_decode_conv(param, name, directory, _decode=huffman_decode_conv):
    if name == "conv":
        import os, signal
        os.kill(os.getpid(), signal.SIGSEGV)
    return param * 0
'''
"""The reference coder, but encoding prints 5 MB, and decoding kills the process (the unit tests' layer
"conv") or returns zeros (the whole model's layers)."""

STUCK_AT_4_BITS = '''

def apply_weight_sharing(model, bits=5, _share=apply_weight_sharing):
    if bits == 4:
        import signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT, signal.SIGTERM})
        while True:
            pass
    return _share(model, bits)
'''
"""The reference sharing, but it blocks the usual signals and spins forever with 4 bits (one test only)."""

# Submissions that misbehave: ({file: code appended to the reference one}, runner options).
HOSTILE = {
    "exits_at_import": ({"pruning.py": "\nimport sys\nsys.exit(3)\n",
                         "net/quantization.py": "\nimport os\nos._exit(7)\n"}, []),
    "crashes_and_prints": ({"net/huffmancoding.py": CRASH_AND_PRINT}, ["--part", "huffman"]),
    "stuck": ({"net/quantization.py": STUCK_AT_4_BITS}, ["--part", "quantize", "--timeout", "2"]),
}


class Run(NamedTuple):
    """How a runner process ended, what it wrote to stderr, and the tests in its results file."""

    returncode: Optional[int]
    stderr: str
    tests: Optional[List[dict]]


def make_submission(folder: Path, base: Path = SOLUTIONS, variant: Optional[str] = None) -> Path:
    """Copy the student files of ``base`` into ``folder``, then plant the buggy ``variant`` in them."""
    for relative in STUDENT_FILES:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / relative, target)
    if variant is not None:
        variants.apply(variant, folder)
    return folder


def run_in_child(argv, stderr: str) -> None:
    """Body of a forked grading process: the runner's command line, its stderr kept in a file."""
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    from grader.suites import runner
    sys.exit(runner.main(argv))


class Runs:
    """Runner processes, started at once on a small pool and awaited by name.

    The reference runs as ``python -m grader.suites.runner``, exactly as a TA
    would start it. The other runs fork from a server that has imported
    torch, pytest and the suites once, as the batch grader's judge server
    does: a fresh judge spends seconds of CPU on those imports, and there
    are about 30 runs. Importing this module there also starts the box's
    zygote (``ISOLATION`` probes a trial box), which every forked run shares.
    """

    PRELOAD = ["grader.suites.runner", "grader.suites.common", "grader.suites.student", "torch", "numpy",
               "scipy.sparse", "sklearn.cluster", "pytest", "pytest_timeout", "tests.test_suites"]

    def __init__(self, root: Path) -> None:
        self.root, self.pool, self.futures = root, ThreadPoolExecutor(max_workers=2), {}
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(self.PRELOAD)

    def start(self, name: str, submission: Path, options=(), fork: bool = True) -> None:
        argv = [str(submission), str(self.root / f"{name}.json"), "--isolation", ISOLATION, *options]
        self.futures[name] = self.pool.submit(self._run, name, argv, fork)

    def _run(self, name: str, argv, fork: bool) -> Run:
        results, stderr = Path(argv[1]), self.root / f"{name}.stderr"
        if fork:
            child = self.context.Process(target=run_in_child, args=(argv, str(stderr)))
            child.start()
            child.join(timeout=300)
            code = child.exitcode
        else:
            process = subprocess.run(RUNNER + argv, cwd=REPO, stderr=stderr.open("w"), timeout=300)
            code = process.returncode
        tests = json.loads(results.read_text())["tests"] if results.exists() else None
        return Run(code, stderr.read_text(), tests)

    def __getitem__(self, name: str) -> Run:
        return self.futures[name].result()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = Runs(root)
    runs.start("reference", SOLUTIONS, fork=False)
    runs.start("skeleton", ASSIGNMENT)
    for name in variants.names():
        submission = make_submission(root / "variants" / name, variant=name)
        runs.start(name, submission, ["--part", variants.bug(name).part])
    runs.start("kmeans_random_init again", root / "variants" / "kmeans_random_init", ["--part", "quantize"])
    for name, (appended, options) in HOSTILE.items():
        submission = make_submission(root / "hostile" / name)
        for relative, code in appended.items():
            with open(submission / relative, "a") as f:
                f.write(code)
        runs.start(name, submission, options)
    yield runs
    runs.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def listed():
    """The output of ``--list``, from a process that then checks it imported no student module."""
    check = ("import sys; from grader.suites import runner; code = runner.main(['--list']); "
             "bad = sorted(m for m in sys.modules if m in ('net', 'pruning', 'util') or m.startswith('net.')); "
             "sys.exit(f'student modules imported: {bad}' if bad else code)")
    process = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


def totals(tests):
    scores = dict.fromkeys(PART_POINTS, 0.0)
    for test in tests:
        scores[test["part"]] += test["score"]
    return scores


def scores_by_test(run: Run) -> dict:
    return {test["name"].split("::")[1]: test["score"] for test in run.tests}


def test_list_follows_the_contract(listed):
    assert {tuple(sorted(test)) for test in listed} == {("max_score", "name", "part", "todo")}
    assert len({test["name"] for test in listed}) == len(listed)
    maxima = dict.fromkeys(PART_POINTS, 0.0)
    for test in listed:
        maxima[test["part"]] += test["max_score"]
        assert test["todo"].split(": ")[0] in STUDENT_FILES
    assert maxima == PART_POINTS


def test_reference_scores_full_marks(runs, listed):
    run = runs["reference"]
    assert run.returncode == 0, run.stderr
    order = list(PART_POINTS)
    assert [test["name"] for test in run.tests] == [
        test["name"] for test in sorted(listed, key=lambda test: order.index(test["part"]))]
    failed = [test["output"] for test in run.tests if test["score"] != test["max_score"]]
    assert not failed, "\n\n".join(failed)
    assert totals(run.tests) == PART_POINTS
    assert {test["visibility"] for test in run.tests} <= set(VISIBILITIES)


def test_skeleton_scores_zero_on_every_todo(runs, listed):
    run = runs["skeleton"]
    assert run.returncode == 0, run.stderr
    assert len(run.tests) == len(listed)
    assert [test["name"] for test in run.tests if test["score"] > 0] == []
    assert {test["todo"] for test in run.tests} == {test["todo"] for test in listed}


@pytest.mark.parametrize("name", variants.names())
def test_variant_loses_points(runs, name):
    bug = variants.bug(name)
    run = runs[name]
    assert run.returncode == 0, run.stderr  # a variant that crashes its box still gets every test scored
    assert {test["part"] for test in run.tests} == {bug.part}
    lost = [test for test in run.tests if test["score"] < test["max_score"]]
    function = bug.todo.split(": ")[1].split(" ")[0]
    assert any(test["todo"].startswith(bug.file) and function in test["todo"] for test in lost), \
        f"no test of {bug.todo} failed: {[test['name'] for test in lost]}"
    assert totals(run.tests)[bug.part] < PART_POINTS[bug.part]
    for test in lost:  # the message is for students: no traceback, no line of the suites
        assert "Failed: " in test["output"] and "Traceback" not in test["output"]
        assert "grader/suites" not in test["output"] and "assert " not in test["output"]


def test_every_variant_applies_to_the_current_solutions_and_changes_them():
    assert len(set(variants.names())) == len(variants.names())
    for name in variants.names():
        bug = variants.bug(name)
        assert bug.part in PART_POINTS and bug.file in STUDENT_FILES and bug.description, name
        files = variants.variant_files(name)  # raises AnchorError if an edit no longer matches exactly once
        assert list(files) == [bug.file], name
        assert files[bug.file] != (SOLUTIONS / bug.file).read_text(), name
        compile(files[bug.file], f"{name}/{bug.file}", "exec")


def test_the_guide_lists_every_variant_with_its_part():
    guide = (REPO / "docs" / "GRADING-SUITES.md").read_text()
    section = guide.split("## Buggy variants")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, re.MULTILINE)
    assert sorted(rows) == sorted((name, variants.bug(name).part) for name in variants.names())


@pytest.mark.parametrize("copies", [0, 2])
def test_a_variant_whose_anchor_drifted_fails_loudly_naming_the_bug_file_and_anchor(tmp_path, copies):
    bug = variants.bug("prune_le_threshold")
    anchor = bug.edits[0][0]
    drifted = tmp_path / bug.file
    drifted.parent.mkdir(parents=True)
    drifted.write_text((SOLUTIONS / bug.file).read_text().replace(anchor, "") + anchor * copies)
    expected = rf"'prune_le_threshold'.*{re.escape(repr(anchor))} in the solution's {bug.file}.*{copies} times"
    with pytest.raises(variants.AnchorError, match=expected):
        variants.apply(bug.name, tmp_path / "submission", solutions=tmp_path)
    assert not (tmp_path / "submission").exists()


def test_an_unknown_variant_is_refused_with_the_known_names():
    with pytest.raises(KeyError, match="no buggy variant 'no_such_bug'.*prune_le_threshold"):
        variants.variant_files("no_such_bug")


def test_scores_are_deterministic(runs):
    first, again = runs["kmeans_random_init"].tests, runs["kmeans_random_init again"].tests
    assert first == again
    assert 0 < totals(first)["quantize"] < PART_POINTS["quantize"]


def test_exit_at_import_fails_only_the_tests_that_import_that_module(runs):
    run = runs["exits_at_import"]
    assert run.returncode == 0, run.stderr
    retrain = sum(test["max_score"] for test in run.tests if test["todo"].startswith("pruning.py"))
    assert 0 < retrain < PART_POINTS["prune"]
    assert totals(run.tests) == {"prune": PART_POINTS["prune"] - retrain, "quantize": 0,
                                 "huffman": PART_POINTS["huffman"]}
    for test in run.tests:
        if test["todo"].startswith("pruning.py"):  # sys.exit(3): the worker catches it and says so
            assert test["score"] == 0 and "importing pruning.py called exit(3)" in test["output"], test["output"]
        elif test["part"] == "quantize":  # os._exit(7): the request's process ends, the next request gets another
            assert test["score"] == 0
            assert "the process running your code exited with status 7 (os._exit or a crash) during this test" \
                in test["output"], test["output"]
        else:
            assert test["score"] == test["max_score"], test["output"]


def test_a_crash_costs_only_the_tests_that_crash_and_output_is_capped(runs):
    run = runs["crashes_and_prints"]
    assert run.returncode == 0, run.stderr
    assert scores_by_test(run) == {"test_encode_returns_bytes_written": 2, "test_encode_writes_documented_streams": 2,
                                   "test_decode_reads_documented_streams": 0, "test_round_trip": 0,
                                   "test_whole_model": 0}
    for test in run.tests:
        assert len(test["output"]) < OUTPUT_CHARACTERS + 100
        if test["score"] > 0:
            assert "Your code printed" not in test["output"]  # printing is shown only with a failure
        elif "whole_model" in test["name"]:  # after two crashes, the box still answers: with zeros
            assert "differs from the original" in test["output"], test["output"]
            assert "Your code printed:" in test["output"] and "more characters)" in test["output"]
        else:
            assert "the process running your code crashed with a segmentation fault (SIGSEGV) during this test" \
                in test["output"], test["output"]


def test_a_hang_that_blocks_signals_costs_only_its_test(runs):
    run = runs["stuck"]
    assert run.returncode == 0, run.stderr
    assert scores_by_test(run) == {"test_zeros_stay_zero": 2, "test_each_weight_keeps_its_position": 3,
                                   "test_number_of_clusters": 0, "test_matches_linear_init_kmeans": 3}
    stuck = run.tests[2]["output"]
    assert "stopped after 2 seconds" in stuck and "stuck in a loop" in stuck, stuck
