"""Batch grading (grader/grade.py): every archive format and rejection, the outputs, resuming, the command line.

A small class (the reference solutions, once with a crash, and the skeleton,
in every format, and archives that must be rejected) is graded once by the real hidden suites,
each submission in its box, as a TA grades one. The box itself is tested in
tests/test_box.py and hostile submissions in tests/test_hostile.py.
"""
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from grader import box, grade, homework
from tests.test_archives import RAR_FIXTURES, make_zip

REPO = Path(__file__).resolve().parent.parent
ISOLATION = box.strongest_level()[0]
"""bubblewrap where it works (it is installed here and on CI); else the class is graded without a sandbox."""
OPTIONS = ["--jobs", "2", "--no-progress", "--isolation", ISOLATION]
SEGFAULT_AT_IMPORT = b"import ctypes as _ctypes\n_ctypes.string_at(0)\n"
GRADED = ("ok", "ok_again", "segfault", "nested", "nopruning")
"""The members of the class that reach the judge (the others are rejected first)."""
RESUMED = ("ok", "nested", "nopruning")
"""Members of the class that reach the judge, graded again by the resume test (three keep it short)."""


def student_files(base: Path) -> dict:
    """The student files of ``base`` (``solutions/`` or ``assignment/``): net/ and pruning.py, as bytes."""
    files = {f"net/{p.name}": p.read_bytes() for p in (base / "net").glob("*.py")}
    files["pruning.py"] = (base / "pruning.py").read_bytes()
    return files


def write_tree(folder: Path, files: dict) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def build_class(folder: Path) -> dict:
    """Every format and every kind of rejection; returns what each student deserves."""
    folder.mkdir()
    ok, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    expected = {  # id: (prune, quantize, huffman, status starts with)
        "ok": (70, 10, 10, "ok"), "ok_again": (70, 10, 10, "ok"),
        "segfault": (70, 10, 0, "ok"),  # a crash costs its tests, nothing else
        "nested": (0, 0, 0, "ok"),  # the skeleton
        "nopruning": (50, 10, 10, "ok"),  # net/ alone, as the original handout says: all but pruning.py's TODOs
        "empty": (0, 0, 0, "rejected: the submission is empty"),
        "corrupt": (0, 0, 0, "rejected: the zip archive is damaged"),
        "dup": (0, 0, 0, "error: several submissions"),
        "slip": (0, 0, 0, "rejected: an entry's path climbs out"),
    }
    make_zip(folder / "ok.zip", ok)
    shutil.copyfile(folder / "ok.zip", folder / "ok_again.zip")
    write_tree(folder / "segfault" / "assignment",
               {**ok, "net/huffmancoding.py": SEGFAULT_AT_IMPORT + ok["net/huffmancoding.py"]})
    with tarfile.open(folder / "nested.tar.gz", "w:gz") as tf:
        for name, data in {**{f"108/hw/{n}": d for n, d in skeleton.items()}, "__MACOSX/108/hw/net/._prune.py": b"x",
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
    if RAR_FIXTURES.is_dir() and shutil.which("bsdtar"):
        shutil.copyfile(RAR_FIXTURES / "rar5-subdirs.rar", folder / "rarsub.rar")
        shutil.copyfile(RAR_FIXTURES / "rar5-evil-symlink-traversal.rar", folder / "evil.rar")
        expected.update({"rarsub": (0, 0, 0, "rejected: none of the homework's files found"),
                         "evil": (0, 0, 0, "rejected: the archive contains a link (up -> ..)")})
    (folder / "ok.ptmodel").write_bytes(b"a model, not a submission")
    return expected


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """``(root, out, expected, return code)`` of grading the class with ``grade.main``."""
    root = tmp_path_factory.mktemp("class")
    expected = build_class(root / "class")
    code = grade.main([str(root / "class"), "--out", str(root / "out"), *OPTIONS])
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


def results_of(out: Path, sid: str) -> dict:
    return json.loads((out / "results" / f"{sid}.json").read_text())


# --------------------------------------------------------------------------- a class, every format


class TestClass:
    """The class graded once: formats, rejections, the documents written."""

    def test_every_format_and_every_rejection(self, graded_class):
        root, out, expected, code = graded_class
        assert code == 0
        assert wrong_grades(out, expected) == {}

    def test_rejected_archives_leave_nothing_behind(self, graded_class):
        root, out, _, _ = graded_class
        assert not list(root.parent.rglob("slipped.py")) and not Path(tempfile.gettempdir(), "slipped.py").exists()
        assert (root / "class" / "ok.zip").exists() and (root / "class" / "ok.ptmodel").exists()
        assert not list(out.rglob("*.tmp"))
        assert sorted(p.stem for p in (out / "results").glob("*.json")) == sorted(read_grades(out))

    def test_results_are_gradescope_documents_and_feedback_explains(self, graded_class):
        _, out, expected, _ = graded_class
        for sid in expected:
            results = results_of(out, sid)
            assert results["max_score"] == 90 and results["score"] == sum(t["score"] for t in results["tests"]
                                                                          if t["tags"][0] in homework.PART_NAMES)
            assert json.dumps(results, allow_nan=False)
            for test in results["tests"]:
                assert set(test) >= {"name", "score", "max_score", "output", "visibility", "status", "tags"}
                assert test["visibility"] in ("hidden", "after_due_date", "after_published", "visible")
                assert 0 <= test["score"] <= test["max_score"]
            assert results["extra_data"]["isolation"] == ISOLATION
            assert results["extra_data"]["sandbox"] == box.describe(ISOLATION)
            text = (out / "feedback" / f"{sid}.md").read_text()
            assert all(test["name"] in text for test in results["tests"])
        assert "Missing from the submission: pruning.py;" in (out / "feedback" / "nopruning.md").read_text()
        assert results_of(out, "nopruning")["extra_data"]["missing"] == ["pruning.py",
                                                                        *homework.DEPLOY_STUDENT_FILES]
        crashed = [t for t in results_of(out, "segfault")["tests"] if t["tags"][0] == "huffman"]
        assert crashed and all("crashed with a segmentation fault (SIGSEGV) during this test" in t["output"]
                               for t in crashed)

    def test_without_deploy_part_two_scores_zero_and_says_what_to_add(self, graded_class):
        _, out, expected, _ = graded_class
        todos = {todo for part in homework.DEPLOY_PARTS for todo in part.todos}
        for sid in GRADED:  # none of the class hands in deploy/
            tests = [t for t in results_of(out, sid)["tests"] if t["tags"][0] in homework.DEPLOY_PART_NAMES]
            assert sum(t["max_score"] for t in tests) == homework.DEPLOY_POINTS
            assert {t["tags"][1] for t in tests} == todos
            assert all(t["score"] == 0 and t["output"] == grade.DEPLOY_ABSENT for t in tests)
            feedback = (out / "feedback" / f"{sid}.md").read_text()
            assert grade.DEPLOY_ABSENT in feedback
            assert f"Part 2 (deploy/): 0/{homework.DEPLOY_POINTS:g} points" in feedback
            row = read_grades(out)[sid]
            assert row["deploy_total"] == "0" and all(row[p] == "0" for p in homework.DEPLOY_PART_NAMES)
        assert "hand in deploy/channels.py" in grade.DEPLOY_ABSENT and "check_submission.py" in grade.DEPLOY_ABSENT

    def test_grades_csv_records_the_isolation(self, graded_class):
        _, out, expected, _ = graded_class
        with open(out / "grades.csv", newline="") as f:
            assert next(csv.reader(f)) == grade.CSV_FIELDS
        assert {row["isolation"] for row in read_grades(out).values()} == {ISOLATION}

    def test_same_submission_twice_gives_the_same_result(self, graded_class):
        _, out, _, _ = graded_class
        first, second = results_of(out, "ok"), results_of(out, "ok_again")
        assert first["tests"] == second["tests"] and first["extra_data"]["sha256"] == second["extra_data"]["sha256"]


@pytest.mark.heavy  # about 65 s; the default run keeps the resume rules' unit tests
def test_a_killed_run_resumes_without_losing_or_redoing_anything(graded_class, tmp_path):
    """The class's graded members again: killed after a result or two, run again, they end as graded at once."""
    root, reference, _, _ = graded_class
    folder = tmp_path / "class"
    folder.mkdir()
    found, _ = grade.find_submissions(root / "class")
    for source in (path for sid in RESUMED for path in found[sid]):
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, folder / source.name)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(folder), "--out", str(out), *OPTIONS],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "results").glob("*.json")) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert 1 <= len(before) < len(RESUMED)
    assert all(json.loads((out / "results" / name).read_text()) for name in before)  # none half written
    assert grade.main([str(folder), "--out", str(out), *OPTIONS]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert sorted(after) == sorted(f"{sid}.json" for sid in RESUMED)
    assert all(after[name] == mtime for name, mtime in before.items())  # graded before the kill: not again
    for sid in RESUMED:  # as an uninterrupted run made them
        for name in (f"results/{sid}.json", f"feedback/{sid}.md"):
            assert (out / name).read_text() == (reference / name).read_text(), name
    assert read_grades(out) == {sid: row for sid, row in read_grades(reference).items() if sid in RESUMED}
    assert not list(out.rglob("*.tmp"))
    assert grade.main([str(folder), "--out", str(out), *OPTIONS, "--force", "--only", "nested"]) == 0
    again = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert again["nested.json"] > after["nested.json"]  # --force grades again, --only that one alone
    assert {name: t for name, t in again.items() if name != "nested.json"} == \
        {name: t for name, t in after.items() if name != "nested.json"}
    assert (out / "results" / "nested.json").read_text() == (reference / "results" / "nested.json").read_text()


# --------------------------------------------------------------------------- isolation


def test_auto_isolation_refuses_without_a_sandbox_and_basic_grades(tmp_path, monkeypatch, capsys):
    """Without bubblewrap on its PATH, the judge server finds no sandbox: grading needs ``--isolation basic``."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    write_tree(tmp_path / "class" / "skeleton", student_files(REPO / "assignment"))
    out = tmp_path / "out"
    assert grade.main([str(tmp_path / "class"), "--out", str(out), "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert "bubblewrap is not installed" in message and "--isolation basic" in message
    assert not list((out / "results").glob("*.json"))
    assert grade.main([str(tmp_path / "class"), "--out", str(out), "--no-progress", "--isolation", "basic"]) == 0
    assert read_grades(out)["skeleton"] == {"student_id": "skeleton", "prune": "0", "quantize": "0", "huffman": "0",
                                            "code_total": "0", **dict.fromkeys(homework.DEPLOY_PART_NAMES, "0"),
                                            "deploy_total": "0", "status": "ok", "isolation": "basic"}
    assert results_of(out, "skeleton")["extra_data"]["sandbox"] == box.describe("basic")


# --------------------------------------------------------------------------- scores


def test_scores_are_finite_within_bounds_and_follow_the_test_list():
    listed = tuple({"name": f"t{i}", "part": "prune", "todo": "net/prune.py: _prune", "max_score": 2.0}
                   for i in range(7))
    setup = grade.Setup(tests=listed, version="v")
    recorded = [{"name": "t4", "score": -5}, {"name": "t0", "score": math.nan}, {"name": "t1", "score": math.inf},
                {"name": "t2", "score": 1e300, "visibility": "everyone"}, {"name": "t3", "score": "90"},
                {"name": "t5", "score": 1.5, "visibility": "hidden", "output": "half"},
                {"name": "unknown", "score": 2}, "not an entry"]
    scored = grade._score(setup, recorded)
    assert [t.name for t in scored] == [t["name"] for t in listed]
    assert [t.score for t in scored] == [0.0, 0.0, 2.0, 2.0, 0.0, 1.5, 0.0]
    assert all(math.isfinite(t.score) and 0 <= t.score <= t.max_score for t in scored)
    assert scored[2].visibility == "visible" and scored[5].visibility == "hidden"
    assert scored[5].output == "half" and scored[6].output == "Not run: the judge did not report this test."
    assert [t.status for t in scored] == ["failed", "failed", "passed", "passed", "failed", "failed", "failed"]


# --------------------------------------------------------------------------- command line


def test_grade_command_errors_are_plain(tmp_path, capsys):
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path), "--out", str(tmp_path / "out"), "--jobs", "0"])
    assert "--jobs must be at least 1" in capsys.readouterr().err
    for removed in (["--runner", "fake"], ["--part-timeout", "3"], ["--isolation", "namespaces"]):
        with pytest.raises(SystemExit):
            grade.main([str(tmp_path), "--out", str(tmp_path / "out"), *removed])
        assert "error:" in capsys.readouterr().err


def test_submission_discovery(tmp_path):
    for name in ("1.zip", "2.tar.gz", "3.rar", "4.7z", "5.tgz", "a.ptmodel", "notes.txt", ".hidden.zip"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "6").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    found, ignored = grade.find_submissions(tmp_path)
    assert sorted(found) == ["1", "2", "3", "4", "5", "6"]
    assert sorted(p.name for p in ignored) == ["a.ptmodel", "notes.txt"]
    assert homework.student_id("a/b\\c\x01") == "a_b_c_" and homework.student_id(" Li Wei ") == "Li_Wei"


# --------------------------------------------------------------------------- Part 2 (deploy/)


def deploy_files(base: Path) -> dict:
    """Part 2's student files of ``base`` (``deploy/*.py`` of ``homework.DEPLOY_STUDENT_FILES``), as bytes."""
    return {name: (base / name).read_bytes() for name in homework.DEPLOY_STUDENT_FILES}


def scored(parts: dict, missing=()) -> grade.Results:
    """Results whose tests score ``parts[part] = (score, max_score)``, one test per part."""
    tests = tuple(grade.TestResult(f"t_{part}", part, "todo", score, maximum) for part, (score, maximum) in parts.items())
    return grade.Results("s", "s.zip", "h", "v", "ok", "basic", tests, tuple(missing))


@pytest.mark.parametrize("scoring", homework.DEPLOY_SCORINGS)
def test_part_two_counts_as_deploy_scoring_says(monkeypatch, scoring):
    """One setting, ``homework.DEPLOY_SCORING``: Part 2 is its own total, or a bonus in the code total."""
    from grader import publish
    monkeypatch.setattr(homework, "DEPLOY_SCORING", scoring)
    results = scored({"prune": (50, 70), "quantize": (10, 10), "huffman": (0, 10), "channels": (12, 12),
                      "onnx": (3, 10)})
    bonus = scoring == "bonus"
    assert (results.score, results.max_score) == ((75 if bonus else 60), 90)  # bonus points go on top of 90
    assert (results.deploy_score, results.deploy_max) == (15, 22) and results.deploy_handed_in
    assert results.to_gradescope()["score"] == results.score
    assert ("bonus points on top of Part 1" if bonus else "a separate total") in results.summary()
    (row,) = grade_rows_of([results])
    assert (row["code_total"], row["deploy_total"], row["channels"], row["onnx"]) == \
        ("75" if bonus else "60", "15", "12", "3")
    (final,) = publish.final_grades([], {"s": row})
    assert final["total"] == ("75" if bonus else "60") and final["deploy_total"] == "15"
    assert list(final) == publish.FINAL_COLUMNS
    monkeypatch.setattr(homework, "DEPLOY_SCORING", "both")
    with pytest.raises(ValueError, match="DEPLOY_SCORING must be one of"):
        results.score


def grade_rows_of(results) -> list:
    """grades.csv's rows for ``results``, as ``grade.write_grades`` would write them."""
    with tempfile.TemporaryDirectory() as folder:
        for one in results:
            grade.save(Path(folder), one)
        return grade.grade_rows(Path(folder))


def test_a_results_document_with_part_two_reads_back_the_same():
    results = scored({"prune": (70, 70), "lowrank": (4, 8)}, missing=("deploy/int8.py",))
    assert grade.Results.from_json(results.to_gradescope()) == results
    assert "Missing from Part 2: deploy/int8.py" in results.summary()
    document = results.to_gradescope()
    document["tests"][1]["extra_data"]["part"] = "speed"
    with pytest.raises(ValueError, match="part is unknown"):
        grade.Results.from_json(document)


def test_deploy_folder_is_found_nested_and_staged_and_alone_is_not_rejected(tmp_path):
    from grader import archives
    files = {**{f"hw/{n}": d for n, d in student_files(REPO / "solutions").items()},
             **{f"hw/{n}": d for n, d in deploy_files(REPO / "solutions").items()}, "hw/deploy/notes.py": b"x = 1\n"}
    staged = archives.prepare(write_tree(tmp_path / "both", files), tmp_path / "w1")
    assert sorted(p.relative_to(staged / "deploy").as_posix() for p in (staged / "deploy").iterdir()) == \
        sorted(Path(f).name for f in homework.DEPLOY_STUDENT_FILES)
    assert grade._missing(staged) == ()
    alone = archives.prepare(write_tree(tmp_path / "alone", {n: d for n, d in files.items() if "deploy/" in n}),
                             tmp_path / "w2")
    assert grade._missing(alone) == homework.STUDENT_FILES  # Part 1 scores 0, Part 2 is graded
    write_tree(tmp_path / "twice", {"a/deploy/channels.py": b"", "b/deploy/lowrank.py": b""})
    with pytest.raises(archives.Rejected, match="found 2 deploy/ folders"):
        archives.prepare(tmp_path / "twice", tmp_path / "w3")


@pytest.mark.heavy
@pytest.mark.timeout(1200)
def test_part_two_is_graded_in_the_box_and_its_bug_loses_points_there(tmp_path):
    """The reference with Part 2 gets 90 and 48; a Part 2 bug (``DEPLOY_BUGS``) loses points on its own TODO
    through ``grade``, as through the runner. Two Part 2 gradings: about two minutes on 2 cores."""
    from grader import variants
    bug = "kd_temperature_not_squared"
    full = {**student_files(REPO / "solutions"), **deploy_files(REPO / "solutions")}
    folder = tmp_path / "class"
    folder.mkdir()
    make_zip(folder / "full.zip", {f"hw/{name}": data for name, data in full.items()})  # nested, as students pack
    variants.apply(bug, write_tree(folder / "buggy", full))
    assert grade.main([str(folder), "--out", str(tmp_path / "out"), *OPTIONS]) == 0
    rows = read_grades(tmp_path / "out")
    assert (rows["full"]["code_total"], rows["full"]["deploy_total"]) == ("90", f"{homework.DEPLOY_POINTS:g}")
    assert rows["buggy"]["code_total"] == "90" and float(rows["buggy"]["deploy_total"]) < homework.DEPLOY_POINTS
    lost = [t for t in results_of(tmp_path / "out", "buggy")["tests"] if t["score"] < t["max_score"]]
    assert lost and {t["tags"][1] for t in lost} == {variants.bug(bug).todo}
    assert grade.DEPLOY_ABSENT not in (tmp_path / "out" / "feedback" / "full.md").read_text()
