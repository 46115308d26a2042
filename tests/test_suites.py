"""The hidden grading suites: the reference scores 90, the skeleton 0, every buggy variant loses points.

Every case runs the runner's command line in a process of its own, as the
batch grader does (see ``Runs``). All runs start together, two at a time,
when the first test needs one.
"""
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest

from grader.suites import PART_POINTS, VISIBILITIES
from grader.suites.runner import OUTPUT_LIMIT, PROCESS_ENDED
from grader.suites.submission import STUDENT_FILES

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS, ASSIGNMENT, VARIANTS = REPO / "solutions", REPO / "assignment", REPO / "grader" / "variants"
VARIANT_NAMES = sorted(path.name for path in VARIANTS.iterdir() if (path / "bug.json").is_file())
RUNNER = [sys.executable, "-m", "grader.suites.runner"]

def patched_huffman(kind: str) -> str:
    """The reference Huffman coder with a misbehaving decoder.

    ``"crash"``: decoding kills the interpreter (SIGSEGV). Otherwise decoding
    prints 5 MB, then hangs for a layer named "conv" and returns zeros for the others.
    """
    decoder = ("    import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)\n" if kind == "crash" else
               "    print('x' * 5_000_000)\n    while name == 'conv':\n        pass\n    return param * 0\n")
    return (SOLUTIONS / "net/huffmancoding.py").read_text() + (
        "\n\ndef huffman_decode_conv(param, name, directory):\n" + decoder)


# Submissions that misbehave: (file to replace, its new contents, runner options).
HOSTILE = {
    "exit_at_import": ("pruning.py", "import sys\nsys.exit(3)\n", ["--part", "prune"]),
    "hard_exit_at_import": ("net/quantization.py", "import os\nos._exit(7)\n", []),
    "loud_and_stuck": ("net/huffmancoding.py", patched_huffman("loud"), ["--part", "huffman", "--timeout", "2"]),
    "uninterruptible": ("net/quantization.py", "import signal, time\n\ndef apply_weight_sharing(model, bits=5):\n"
                        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n    time.sleep(60)\n",
                        ["--part", "quantize", "--timeout", "1"]),
    "crash_in_decode": ("net/huffmancoding.py", patched_huffman("crash"), ["--part", "huffman"]),
}


class Run(NamedTuple):
    """How a runner process ended, what it wrote to stderr, and the tests in its results file."""

    returncode: Optional[int]
    stderr: str
    tests: Optional[List[dict]]


def make_submission(folder: Path, base: Path = SOLUTIONS, overlay: Path = None) -> Path:
    """Copy the student files of ``base`` into ``folder``, then those of ``overlay`` over them."""
    for relative in STUDENT_FILES:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / relative, target)
    if overlay is not None:
        for source in overlay.rglob("*.py"):
            shutil.copyfile(source, folder / source.relative_to(overlay))
    return folder


def run_in_child(argv, stderr: str) -> None:
    """Body of a forked grading process: the runner's command line, its stderr kept in a file."""
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    from grader.suites import runner
    sys.exit(runner.main(argv))


class Runs:
    """Runner processes, started at once on a small pool and awaited by name.

    The reference runs as ``python -m grader.suites.runner``, exactly as the
    batch grader starts it. The other runs fork from a server that has
    imported torch, numpy, scipy and scikit-learn once: a fresh interpreter
    spends seconds of CPU on those imports, and there are about 30 runs.
    """

    PRELOAD = ["grader.suites.runner", "grader.suites.common", "torch", "numpy", "scipy.sparse",
               "sklearn.cluster", "tqdm", "tests.test_suites"]

    def __init__(self, root: Path) -> None:
        self.root, self.pool, self.futures = root, ThreadPoolExecutor(max_workers=2), {}
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(self.PRELOAD)

    def start(self, name: str, submission: Path, options=(), after: str = None, fork: bool = True) -> None:
        """Start a run; with ``after``, once that run has ended and on a copy of its results file."""
        self.futures[name] = self.pool.submit(self._run, name, [str(submission), str(self.root / f"{name}.json"),
                                                                *options], after, fork)

    def _run(self, name: str, argv, after, fork: bool):
        results, stderr = Path(argv[1]), self.root / f"{name}.stderr"
        if after is not None:
            self[after]
            shutil.copyfile(self.root / f"{after}.json", results)
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

    def __getitem__(self, name: str):
        return self.futures[name].result()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = Runs(root)
    runs.start("reference", SOLUTIONS, fork=False)
    runs.start("skeleton", ASSIGNMENT)
    for name in VARIANT_NAMES:
        part = json.loads((VARIANTS / name / "bug.json").read_text())["part"]
        submission = make_submission(root / "variants" / name, overlay=VARIANTS / name)
        runs.start(name, submission, ["--part", part])
    runs.start("kmeans_random_init again", root / "variants" / "kmeans_random_init", ["--part", "quantize"])
    for name, (relative, text, options) in HOSTILE.items():
        submission = make_submission(root / "hostile" / name)
        (submission / relative).write_text(text)
        runs.start(name, submission, options)
    runs.start("crash_in_decode resumed", root / "hostile" / "crash_in_decode", ["--part", "huffman", "--resume"],
               after="crash_in_decode")
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


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_variant_loses_points(runs, name):
    bug = json.loads((VARIANTS / name / "bug.json").read_text())
    run = runs[name]
    assert run.tests, run.stderr  # a variant may crash the interpreter; what it scored so far counts
    lost = [test for test in run.tests if test["score"] < test["max_score"]]
    file, function = bug["todo"].split(": ")[0], bug["todo"].split(": ")[1].split(" ")[0]
    assert any(test["todo"].startswith(file) and function in test["todo"] for test in lost), \
        f"no test of {bug['todo']} failed: {[test['name'] for test in lost]}"
    assert totals(run.tests)[bug["part"]] < PART_POINTS[bug["part"]]
    for test in lost:  # the message is for students: no traceback, no line of the suites
        assert "Failed: " in test["output"] and "Traceback" not in test["output"]
        assert "grader/suites" not in test["output"] and "assert " not in test["output"]


def test_variants_are_changed_copies_of_the_solutions():
    for name in VARIANT_NAMES:
        files = [path.relative_to(VARIANTS / name) for path in (VARIANTS / name).rglob("*.py")]
        assert files and all(str(relative) in STUDENT_FILES for relative in files), name
        for relative in files:
            assert (VARIANTS / name / relative).read_text() != (SOLUTIONS / relative).read_text()


def test_scores_are_deterministic(runs):
    first, again = runs["kmeans_random_init"].tests, runs["kmeans_random_init again"].tests
    assert first == again
    assert 0 < totals(first)["quantize"] < PART_POINTS["quantize"]


def test_exit_at_import_fails_only_that_module(runs):
    run = runs["exit_at_import"]
    assert run.returncode == 0, run.stderr
    for test in run.tests:
        if test["todo"].startswith("pruning.py"):
            assert test["score"] == 0 and "importing pruning.py called exit(3)" in test["output"]
        else:
            assert test["score"] == test["max_score"], test["output"]


def test_a_dead_process_keeps_the_results_so_far(runs, listed):
    run = runs["hard_exit_at_import"]
    assert run.returncode == 7
    n_prune = sum(test["part"] == "prune" for test in listed)
    assert [test["part"] for test in run.tests] == ["prune"] * n_prune + ["quantize"]
    assert totals(run.tests) == {"prune": PART_POINTS["prune"], "quantize": 0, "huffman": 0}
    assert PROCESS_ENDED in run.tests[-1]["output"]


def test_output_is_capped_and_hangs_time_out(runs):
    run = runs["loud_and_stuck"]
    assert run.returncode == 0, run.stderr
    scores = {test["name"].split("::")[1]: test["score"] for test in run.tests}
    assert scores == {"test_encode_returns_bytes_written": 2, "test_encode_writes_documented_streams": 2,
                      "test_decode_reads_documented_streams": 0, "test_round_trip": 0, "test_whole_model": 0}
    for test in run.tests:
        assert len(test["output"]) < OUTPUT_LIMIT + 100
        if test["score"] > 0:
            assert "Your code printed" not in test["output"]  # printing is shown only with a failure
        elif "whole_model" in test["name"]:
            assert "Your code printed:" in test["output"] and "more characters)" in test["output"]
        else:
            assert "stopped after 2 seconds" in test["output"], test["output"]


def test_uninterruptible_code_is_killed_and_recorded(runs):
    run = runs["uninterruptible"]
    assert run.returncode != 0
    assert len(run.tests) == 1 and run.tests[0]["score"] == 0 and PROCESS_ENDED in run.tests[0]["output"]


def test_resume_runs_only_the_missing_tests(runs):
    crashed, resumed = runs["crash_in_decode"], runs["crash_in_decode resumed"]
    assert crashed.returncode < 0  # killed by SIGSEGV
    assert [test["score"] for test in crashed.tests] == [2, 2, 0] and PROCESS_ENDED in crashed.tests[-1]["output"]
    assert resumed.tests[:3] == crashed.tests and len(resumed.tests) == 4
    assert resumed.tests[3]["score"] == 0 and PROCESS_ENDED in resumed.tests[3]["output"]
