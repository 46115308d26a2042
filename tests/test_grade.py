"""Batch grading (grader/grade.py, grader/sandbox.py): hostile submissions, a whole class end to end, resuming.

The sandbox tests use a tiny fake runner that follows the runner's contract
(it runs ``SUBMISSION/<part>.py`` and scores 1 if that ends without an
exception), so they need no torch. The class tests run the real hidden suites.
"""
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from grader import grade, sandbox
from tests.test_archives import RAR_FIXTURES, make_zip, solution_files

REPO = Path(__file__).resolve().parent.parent
PARTS = ("prune", "quantize", "huffman")
NAMESPACES = sys.platform.startswith("linux") and sandbox.isolation("auto", preload=()) == "namespaces"
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="needs unprivileged user namespaces")
LEVELS = [pytest.param("namespaces", marks=needs_namespaces), "basic"]

FAKE_RUNNER = '''\
"""Stand-in for grader.suites.runner: two tests per part, each runs the part's file of SUBMISSION (with TEST set).

1 point per test that ends without an exception. Like the real runner, it records a test with 0 points before
running it, and --resume keeps the tests already recorded.
"""
import argparse, json, os, sys

FILES = {"prune": "net/prune.py", "quantize": "net/quantization.py", "huffman": "net/huffmancoding.py"}
TESTS = [{"name": part + suffix, "part": part, "todo": name, "max_score": 1.0}
         for part, name in FILES.items() for suffix in ("_a", "_b")]


def write(path, tests):
    with open(path + ".part", "w") as f:
        json.dump({"tests": tests}, f)
    os.replace(path + ".part", path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("submission", nargs="?")
    parser.add_argument("results", nargs="?")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--part")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(TESTS))
        return 0
    done = json.load(open(args.results))["tests"] if args.resume else []
    for test in TESTS:
        if (args.part and test["part"] != args.part) or test["name"] in [t["name"] for t in done]:
            continue
        done.append(dict(test, score=0.0, output="the process ended during this test", visibility="visible"))
        write(args.results, done)
        script = os.path.join(args.submission, test["todo"])
        namespace = {"__file__": script, "TEST": test["name"]}
        try:
            exec(compile(open(script).read(), script, "exec"), namespace)
            done[-1].update(score=1.0, output=str(namespace.get("RESULT", "passed")))
        except Exception as error:
            done[-1].update(output=type(error).__name__ + ": " + str(error))
        write(args.results, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
FAKE_FILES = {"prune": "net/prune.py", "quantize": "net/quantization.py", "huffman": "net/huffmancoding.py"}


@pytest.fixture(scope="module")
def fake_code(tmp_path_factory) -> Path:
    code = tmp_path_factory.mktemp("fake_code")
    (code / "fake_runner.py").write_text(FAKE_RUNNER)
    return code


def fake_files(**scripts: str) -> dict:
    """A submission for the fake runner: net/ and pruning.py, each part's file ``RESULT = 'ok'`` unless given."""
    files = {name: scripts.get(part, "RESULT = 'ok'\n").encode() for part, name in FAKE_FILES.items()}
    return {**files, "net/models.py": b"", "pruning.py": b""}


def fake_submission(folder: Path, **scripts: str) -> Path:
    return write_tree(folder, fake_files(**scripts))


def write_tree(folder: Path, files: dict) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def run_fake(folder: Path, code: Path, level: str = "auto", **limits) -> dict:
    return sandbox.run_submission(folder, code, PARTS, runner="fake_runner", limits=sandbox.Limits(**limits),
                                  level=level, preload=(), expected=dict.fromkeys(PARTS, 2))


def scores(run: sandbox.PartResult) -> list:
    return [t["score"] for t in run.tests]


def sleepers() -> list:
    """Processes running `sleep 31337` (what the forking submissions leave behind, if anything does)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes() == b"sleep\x0031337\x00":
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


FORK_SLEEPERS = """
import os
for escape in (False, True):
    for _ in range(3):
        if os.fork() == 0:
            if escape:
                os.setsid()
            os.execvp("sleep", ["sleep", "31337"])
RESULT = "forked"
"""


# --------------------------------------------------------------------------- the sandbox, with a fake runner


@pytest.mark.parametrize("level", LEVELS)
def test_sandbox_runs_every_part_in_a_clean_environment(tmp_path, fake_code, level):
    probe = "import os, sys\nRESULT = ' '.join([os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'], " \
            "os.environ.get('https_proxy', '-'), os.environ.get('GITHUB_TOKEN', '-')])\n"
    runs = run_fake(fake_submission(tmp_path / "s", prune=probe), fake_code, level)
    assert [scores(runs[p]) for p in PARTS] == [[1.0, 1.0]] * 3
    assert all(runs[p].outcome == "" for p in PARTS)
    cwd, home, tmp, proxy, token = runs["prune"].tests[0]["output"].split()
    assert cwd.endswith("/run/prune/submission") and home.endswith("/run/prune/home") and tmp.endswith("/run/prune/tmp")
    assert proxy == "http://127.0.0.1:9" and token == "-"


@pytest.mark.parametrize("level", LEVELS)
def test_a_crash_costs_only_its_own_part(tmp_path, fake_code, level):
    runs = run_fake(fake_submission(tmp_path / "s", quantize="import ctypes\nctypes.string_at(0)\n",
                                    huffman="import os\nos._exit(3)\n"), fake_code, level)
    assert scores(runs["prune"]) == [1.0, 1.0] and runs["prune"].outcome == ""
    assert runs["quantize"].outcome.startswith("crashed with a segmentation fault (SIGSEGV); the tests after")
    assert scores(runs["quantize"]) == [0.0, 0.0] and runs["huffman"].outcome.startswith("exited with status 3")
    assert runs["quantize"].tests[0]["output"] == "the process ended during this test"


def test_a_crash_in_one_test_costs_only_that_test(tmp_path, fake_code):
    once = "import ctypes\nif TEST == 'huffman_a':\n    ctypes.string_at(0)\n"
    runs = run_fake(fake_submission(tmp_path / "s", huffman=once), fake_code)
    assert scores(runs["huffman"]) == [0.0, 1.0]
    assert runs["huffman"].outcome == ("crashed with a segmentation fault (SIGSEGV); the tests after the one it "
                                       "died in ran in a new process (1 restart(s))")


def test_part_time_limit(tmp_path, fake_code):
    started = time.monotonic()
    runs = run_fake(fake_submission(tmp_path / "s", quantize="while True:\n    pass\n"), fake_code, part_timeout_s=1.5)
    assert runs["quantize"].outcome == "was stopped after the 1.5 s time limit for this part"
    assert scores(runs["quantize"]) == [0.0] and scores(runs["prune"]) == scores(runs["huffman"]) == [1.0, 1.0]
    assert time.monotonic() - started < 30


def test_submission_time_limit(tmp_path, fake_code):
    sleepy = "import time\ntime.sleep(60)\n"
    started = time.monotonic()
    runs = run_fake(fake_submission(tmp_path / "s", prune=sleepy, quantize=sleepy, huffman=sleepy), fake_code,
                    part_timeout_s=30, submission_timeout_s=2)
    assert time.monotonic() - started < 20
    assert all("2 s time limit for the whole submission" in runs[p].outcome for p in PARTS)


def test_memory_limit(tmp_path, fake_code):
    hog = ("blocks = []\ntry:\n    while len(blocks) < 64:\n        blocks.append(bytearray(16 << 20))\n"
           "    RESULT = 'no limit'\nexcept MemoryError:\n"
           "    RESULT = 'MemoryError after %d MB' % (16 * len(blocks))\n")
    runs = run_fake(fake_submission(tmp_path / "s", prune=hog), fake_code, memory_mb=128)
    assert runs["prune"].tests[0]["output"].startswith("MemoryError after")
    assert int(runs["prune"].tests[0]["output"].split()[2]) <= 128 and scores(runs["quantize"]) == [1.0, 1.0]


def test_output_is_capped(tmp_path, fake_code):
    shout = "import os\nfor _ in range(1000):\n    os.write(2, b'x' * (1 << 20))\n"
    runs = run_fake(fake_submission(tmp_path / "s", huffman=shout), fake_code, file_mb=8)
    assert runs["huffman"].tests[0]["output"] == "OSError: [Errno 27] File too large"  # Python ignores SIGXFSZ
    assert "bytes cut" in runs["huffman"].log and len(runs["huffman"].log) < 10_000
    assert scores(runs["prune"]) == [1.0, 1.0]


@pytest.mark.parametrize("level", LEVELS)
def test_processes_left_behind_are_killed(tmp_path, fake_code, level):
    runs = run_fake(fake_submission(tmp_path / "s", quantize=FORK_SLEEPERS), fake_code, level)
    assert runs["quantize"].tests[0]["output"] == "forked"
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == []


@needs_namespaces
def test_namespaces_keep_the_grader_files_network_and_privileges_out_of_reach(tmp_path, fake_code):
    canary = tmp_path / "grader_files"
    canary.mkdir()
    (canary / "keep.txt").write_text("precious")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    attack = f"""
import os, shutil, socket
found = []
for action in (lambda: shutil.rmtree({str(canary)!r}), lambda: open({str(canary / 'new.txt')!r}, 'w'),
               lambda: open({str(REPO / 'sandbox_escape.txt')!r}, 'w'),
               lambda: socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=2),
               lambda: os.kill(1, 9)):
    try:
        action()
        found.append('DONE')
    except OSError as error:
        found.append(type(error).__name__)
caps = [line.split()[1] for line in open('/proc/self/status') if line.startswith('CapEff')][0]
RESULT = ' '.join(found + [caps])
"""
    try:
        runs = run_fake(fake_submission(tmp_path / "s", prune=attack), fake_code, "namespaces")
    finally:
        listener.close()
        escaped = (REPO / "sandbox_escape.txt").exists()
        (REPO / "sandbox_escape.txt").unlink(missing_ok=True)
    assert not escaped and (canary / "keep.txt").read_text() == "precious" and not (canary / "new.txt").exists()
    rmtree, write, repo, connect, kill, caps = runs["prune"].tests[0]["output"].split()
    assert "DONE" not in (rmtree, write, repo, connect) and caps == "0000000000000000"
    assert scores(runs["quantize"]) == [1.0, 1.0]  # PID 1 survived the kill


# --------------------------------------------------------------------------- a whole class, fake runner

FAKE_OPTIONS = ["--runner", "fake_runner", "--preload", "", "--part-timeout", "3", "--no-progress"]


def grade_fake(folder: Path, out: Path, fake_code: Path, *extra: str) -> int:
    return grade.main([str(folder), "--out", str(out), "--code", str(fake_code), *FAKE_OPTIONS, *extra])


def build_fake_class(root: Path) -> dict:
    """Every format and every kind of hostile submission, for the fake runner; returns what each deserves."""
    folder = root / "class"
    folder.mkdir()
    ok = fake_files()
    expected = {  # id: (prune, quantize, huffman, status starts with)
        "ok": (2, 2, 2, "ok"), "ok_again": (2, 2, 2, "ok"), "okfolder": (2, 2, 2, "ok"), "nested": (2, 2, 2, "ok"),
        "nopruning": (0, 0, 0, "rejected: no pruning.py found"),
        "empty": (0, 0, 0, "rejected: the submission is empty"),
        "corrupt": (0, 0, 0, "rejected: the zip archive is damaged"), "dup": (0, 0, 0, "error: several submissions"),
        "slip": (0, 0, 0, "rejected: an entry's path climbs out"),
        "hang": (2, 0, 2, "partial: quantize: the test process was stopped after the 3 s time limit"),
        "crash": (2, 2, 0, "partial: huffman: the test process crashed with a segmentation fault"),
        "exit": (0, 2, 2, "partial: prune: the test process exited with status 7"),
        "forker": (2, 2, 2, "ok"), "printer": (2, 0, 2, "ok"),
    }
    make_zip(folder / "ok.zip", ok)
    shutil.copyfile(folder / "ok.zip", folder / "ok_again.zip")
    write_tree(folder / "okfolder" / "assignment", ok)
    with tarfile.open(folder / "nested.tar.gz", "w:gz") as tf:
        for name, data in {**{f"108/hw/{n}": d for n, d in ok.items()}, "__MACOSX/108/hw/net/._prune.py": b"x",
                           "108/hw/net/prune.py~": b"x"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    make_zip(folder / "nopruning.zip", {n: d for n, d in ok.items() if n != "pruning.py"})
    make_zip(folder / "empty.zip", {})
    (folder / "corrupt.zip").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    make_zip(folder / "dup.zip", ok)
    shutil.copyfile(folder / "ok.zip", folder / "dup.tar")
    make_zip(folder / "slip.zip", {**ok, "../../slipped.py": b"x = 1\n"})
    make_zip(folder / "hang.zip", fake_files(quantize="while True:\n    pass\n"))
    make_zip(folder / "crash.zip", fake_files(huffman="import ctypes\nctypes.string_at(0)\n"))
    make_zip(folder / "exit.zip", fake_files(prune="import os\nos._exit(7)\n"))
    make_zip(folder / "forker.zip", fake_files(quantize=FORK_SLEEPERS))
    make_zip(folder / "printer.zip", fake_files(quantize="import os\nwhile True:\n    os.write(2, b'x' * (1 << 20))\n"))
    if RAR_FIXTURES.is_dir() and shutil.which("bsdtar"):
        shutil.copyfile(RAR_FIXTURES / "rar5-subdirs.rar", folder / "rarsub.rar")
        shutil.copyfile(RAR_FIXTURES / "rar5-evil-symlink-traversal.rar", folder / "evil.rar")
        expected.update({"rarsub": (0, 0, 0, "rejected: no net/ folder found"),
                         "evil": (0, 0, 0, "rejected: the archive contains a link (up -> ..)")})
    if NAMESPACES:  # at the basic level nothing stops it: this one would really delete the output folder
        attack = (f"import os, shutil\nfor target in {[str(root / 'out'), str(folder)]!r}:\n"
                  "    for action in (lambda: open(os.path.join(target, 'x.txt'), 'w'),\n"
                  "                   lambda: shutil.rmtree(target)):\n"
                  "        try:\n            action()\n        except OSError:\n            pass\n"
                  f"for target in {[str(REPO / 'escape.txt'), str(root / 'escape.txt')]!r}:\n"
                  "    try:\n        open(target, 'w')\n    except OSError:\n        pass\n"
                  "try:\n    os.remove(os.path.join(os.path.dirname(__file__), 'quantization.py'))\n"
                  "except OSError:\n    pass\nRESULT = 'deleted'\n")
        make_zip(folder / "deleter.zip", fake_files(prune=attack))
        expected["deleter"] = (2, 2, 2, "ok")
    (folder / "ok.ptmodel").write_bytes(b"a model, not a submission")
    return expected


@pytest.fixture(scope="module")
def fake_class(tmp_path_factory, fake_code):
    root = tmp_path_factory.mktemp("fake_class")
    expected = build_fake_class(root)
    code = grade_fake(root / "class", root / "out", fake_code, "--jobs", "2")
    return root, root / "out", expected, code


def read_grades(out: Path) -> dict:
    with open(out / "grades.csv", newline="") as f:
        return {row["student_id"]: row for row in csv.DictReader(f)}


def wrong_grades(out: Path, expected: dict) -> dict:
    """The rows of grades.csv that differ from ``expected`` (empty when all is right)."""
    grades = read_grades(out)
    wrong = {sid: None for sid in set(expected) ^ set(grades)}
    for sid, (prune, quantize, huffman, status) in expected.items():
        row = grades.get(sid)
        if row and ((float(row["prune"]), float(row["quantize"]), float(row["huffman"])) != (prune, quantize, huffman)
                    or float(row["code_total"]) != prune + quantize + huffman or not row["status"].startswith(status)):
            wrong[sid] = row
    return wrong


def test_fake_class_every_format_and_hostile_submission(fake_class):
    root, out, expected, code = fake_class
    assert code == 0
    assert wrong_grades(out, expected) == {}


def test_fake_class_hostile_submissions_leave_nothing_behind(fake_class):
    root, out, expected, _ = fake_class
    assert sleepers() == []
    assert not (root / "slipped.py").exists() and not (root.parent / "slipped.py").exists()
    assert not (REPO / "escape.txt").exists() and not (root / "escape.txt").exists()
    assert (root / "class" / "ok.zip").exists() and not list(root.rglob("x.txt"))
    assert not list(out.rglob("*.tmp"))


def test_results_are_gradescope_documents_and_feedback_explains(fake_class):
    root, out, expected, _ = fake_class
    for sid in expected:
        results = json.loads((out / "results" / f"{sid}.json").read_text())
        assert results["max_score"] == 6 and results["score"] == sum(t["score"] for t in results["tests"])
        for test in results["tests"]:
            assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
            assert test["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
        text = (out / "feedback" / f"{sid}.md").read_text()
        assert all(test["name"] in text for test in results["tests"])
    hang = json.loads((out / "results" / "hang.json").read_text())["tests"]
    assert hang[3]["output"] == "Not run: the test process was stopped after the 3 s time limit for this part."
    assert hang[2]["output"] == "the process ended during this test"
    assert "no pruning.py found" in (out / "feedback" / "nopruning.md").read_text()
    assert "File too large" in (out / "feedback" / "printer.md").read_text()


def test_same_submission_twice_gives_the_same_result(fake_class):
    _, out, _, _ = fake_class
    first, second = (json.loads((out / "results" / f"{sid}.json").read_text()) for sid in ("ok", "ok_again"))
    assert first["tests"] == second["tests"] and first["extra_data"]["sha256"] == second["extra_data"]["sha256"]


def test_a_killed_run_resumes_without_losing_or_redoing_anything(tmp_path, fake_code):
    folder = tmp_path / "class"
    folder.mkdir()
    slow = "import time\ntime.sleep(0.4)\nRESULT = 'slow'\n"
    for i in range(5):
        make_zip(folder / f"s{i}.zip", fake_files(prune=slow, quantize=slow if i % 2 else "RESULT = 'fast'\n"))
    assert grade_fake(folder, tmp_path / "reference", fake_code) == 0  # uninterrupted, to compare with
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", str(folder), "--out", str(out), "--code", str(fake_code),
               *FAKE_OPTIONS]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "results").glob("*.json"))) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert 1 <= len(before) < 5
    assert all(json.loads((out / "results" / name).read_text()) for name in before)  # none half written
    assert grade_fake(folder, out, fake_code) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert sorted(after) == [f"s{i}.json" for i in range(5)]
    assert all(after[name] == mtime for name, mtime in before.items())  # graded before the kill: not again
    for name in ["grades.csv"] + [f"results/s{i}.json" for i in range(5)] + [f"feedback/s{i}.md" for i in range(5)]:
        assert (out / name).read_text() == (tmp_path / "reference" / name).read_text(), name
    assert not list(out.rglob("*.tmp"))
    assert grade_fake(folder, out, fake_code, "--force", "--only", "s3") == 0  # --force grades again
    assert (out / "results" / "s3.json").stat().st_mtime_ns > after["s3.json"]


# --------------------------------------------------------------------------- a class, real suites

REAL_OPTIONS = ["--test-timeout", "20", "--part-timeout", "150", "--memory-mb", "768", "--no-progress"]
HANG_ONCE = """import os as _os
if not _os.path.exists("hung_once"):
    open("hung_once", "w").close()
    while True:
        pass
"""
HOSTILE = {  # id: (the file the code goes at the top of, code)
    "hang": ("net/quantization.py", HANG_ONCE),
    "memory": ("net/quantization.py", "_hog = []\nwhile True:\n    _hog.append(bytearray(64 << 20))\n"),
    "exit_import": ("net/huffmancoding.py", "import os as _os\n_os._exit(3)\n"),
    "sysexit": ("net/huffmancoding.py", "import sys as _sys\n_sys.exit('bye')\n"),
    "segfault": ("net/huffmancoding.py", "import ctypes as _ctypes\n_ctypes.string_at(0)\n"),
}
REAL_EXPECTED = {  # id: (prune, quantize, huffman, status starts with); "hang" is checked apart
    "sol": (70, 10, 10, "ok"), "skeleton": (0, 0, 0, "ok"), "plainfolder": (70, 10, 10, "ok"),
    "nested": (70, 10, 10, "ok"), "corrupt": (0, 0, 0, "rejected: the zip archive is damaged"),
    "memory": (70, 0, 10, "ok"), "exit_import": (70, 10, 0, "partial: huffman: the test process exited with status 3"),
    "sysexit": (70, 10, 0, "ok"), "segfault": (70, 10, 0, "partial: huffman: the test process crashed with a segm"),
}


def with_code_on_top(relative: str, code: str) -> dict:
    files = solution_files()
    files[relative] = code.encode() + b"\n" + files[relative]
    return files


@pytest.fixture(scope="module")
def real_class(tmp_path_factory):
    """A class of reference solutions, the skeleton and hostile variants, graded by the real hidden suites."""
    root = tmp_path_factory.mktemp("real_class")
    folder = root / "class"
    folder.mkdir()
    sol = solution_files()
    make_zip(folder / "sol.zip", sol)
    with tarfile.open(folder / "skeleton.tar.gz", "w:gz") as tf:
        for name in ("net", "pruning.py"):
            tf.add(REPO / "assignment" / name, name, filter=lambda info: None if "__pycache__" in info.name else info)
    write_tree(folder / "plainfolder" / "assignment", sol)
    make_zip(folder / "nested.zip", {**{f"108062345/hw/assignment/{n}": d for n, d in sol.items()},
                                     "__MACOSX/108062345/hw/assignment/net/._prune.py": b"junk", ".DS_Store": b"junk"})
    (folder / "corrupt.zip").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    for sid, (relative, code) in HOSTILE.items():
        make_zip(folder / f"{sid}.zip", with_code_on_top(relative, code))
    code = grade.main([str(folder), "--out", str(root / "out"), "--jobs", "2", *REAL_OPTIONS])
    return root / "out", code


def test_real_suites_grade_a_mixed_class(real_class):
    out, code = real_class
    assert code == 0
    hang = read_grades(out).pop("hang")
    assert wrong_grades(out, {**REAL_EXPECTED, "hang": (70, 10, 10, "ok")}) == {"hang": hang}
    assert float(hang["prune"]) == 70 and 0 < float(hang["quantize"]) < 10 and float(hang["huffman"]) == 10
    hung = json.loads((out / "results" / "hang.json").read_text())
    assert any("stopped after 20 seconds" in t["output"] for t in hung["tests"])
    crashed = json.loads((out / "results" / "segfault.json").read_text())["tests"]
    crashed = [t for t in crashed if t["tags"][0] == "huffman"]
    assert all("the grading process ended during this test" in t["output"] for t in crashed)  # each test restarted


# --------------------------------------------------------------------------- command line


def test_grade_command_errors_are_plain(tmp_path, capsys):
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert "is not a folder" in capsys.readouterr().err


def test_submission_discovery(tmp_path):
    for name in ("1.zip", "2.tar.gz", "3.rar", "4.7z", "5.tgz", "a.ptmodel", "notes.txt", ".hidden.zip"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "6").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    found, ignored = grade.find_submissions(tmp_path)
    assert sorted(found) == ["1", "2", "3", "4", "5", "6"]
    assert sorted(p.name for p in ignored) == ["a.ptmodel", "notes.txt"]
    assert grade.safe_id("a/b\\c\x01") == "a_b_c_"
