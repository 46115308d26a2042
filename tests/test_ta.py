"""The TA's semester tools around grading: roster, resubmissions and regrades, exports to course sites, the summary.

One small class is graded once by the real suites (``grade --roster``):
alice hands in the solutions, bob the untouched skeleton, carol the skeleton
and then the solutions as ``carol__2.zip``, erin is on the roster but hands in
nothing, and ``zed.zip`` (empty) is not on the roster.
"""
import csv
import io
import shutil
from pathlib import Path

import pytest

from grader import export, grade, homework, resubmit, roster
from tests.test_archives import make_zip
from tests.test_grade import OPTIONS, read_grades, results_of, student_files, write_tree

REPO = Path(__file__).resolve().parent.parent
ROSTER = "id,name,lms_id\nalice,Alice Liddell,1001\nbob,Bob Marley,\ncarol,Carol King,1003\nerin,Erin Brockovich,1005\n"


@pytest.fixture(scope="module")
def ta_class(tmp_path_factory):
    """``(root, submissions, out, roster path, return code)`` of grading the class with its roster."""
    root = tmp_path_factory.mktemp("ta")
    submissions = root / "submissions"
    submissions.mkdir()
    solutions, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    make_zip(submissions / "alice.zip", solutions)
    write_tree(submissions / "bob", skeleton)
    make_zip(submissions / "carol.zip", skeleton)
    make_zip(submissions / "carol__2.zip", solutions)
    make_zip(submissions / "zed.zip", {})
    (root / "roster.csv").write_text(ROSTER)
    out = root / "out"
    code = grade.main([str(submissions), "--out", str(out), "--roster", str(root / "roster.csv"), *OPTIONS])
    return root, submissions, out, root / "roster.csv", code


# --------------------------------------------------------------------------- roster


def test_the_roster_gives_missing_students_a_zero_with_a_reason(ta_class, capsys):
    _, _, out, _, code = ta_class
    assert code == 0
    grades = read_grades(out)
    assert sorted(grades) == ["alice", "bob", "carol", "erin", "zed"]
    assert grades["erin"]["code_total"] == "0" and grades["erin"]["status"] == roster.MISSING
    assert grades["alice"]["code_total"] == "90" and grades["bob"]["code_total"] == "0"
    assert grades["zed"]["status"].startswith("rejected: the submission is empty")
    assert "no submission" in (out / "feedback" / "erin.md").read_text()
    report = (out / "roster-check.txt").read_text()
    assert "1 in the roster without a submission" in report and "erin" in report
    assert "1 submissions not in the roster" in report and "zed" in report


def test_a_late_file_replaces_a_missing_record_and_earlier_grades_are_kept(tmp_path):
    sid = "kim"
    students = {sid: roster.Student(sid, "Kim")}
    setup = grade.Setup(tests=({"name": "t", "part": "prune", "todo": "x", "max_score": 90.0},), version="v")
    out = tmp_path / "out"
    check = roster.record(students, [], out, setup)
    assert check.missing == [sid] and check.kept == [] and results_of(out, sid)["extra_data"]["status"] == roster.MISSING
    graded = grade.Results(sid, "kim.zip", "abc", setup.version, "ok", "", (grade._test(setup.tests[0], 90.0, ""),))
    grade.save(out, resubmit.annotate(graded, [], out))
    assert "Regraded: this replaces the earlier grade of 0/90" in (out / "feedback" / f"{sid}.md").read_text()
    check = roster.record(students, [], out, setup)  # the file is gone: keep its grade
    assert check.kept == [sid] and results_of(out, sid)["score"] == 90.0


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    (b"\xff\xfeid,name\n", "not UTF-8"),
    (b"student,name\na,A\n", "no column id"),
    (b"id,name\n", "lists no student"),
    (b"id,name\na,A\n,B\n", "line 3: the id is empty"),
    (b"id,name\na,A\na,B\n", "line 3: the id 'a' is listed twice"),
    (b"id,name\na/b,A\n", "characters a file name cannot carry"),
    (b"id,name\nbob__2,B\n", "ends in __<number>"),
])
def test_bad_rosters_are_explained(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    if text is not None:
        path.write_bytes(text)
    with pytest.raises(roster.RosterError, match=message):
        roster.load(path)


def test_roster_header_is_forgiving_and_optional_lms_id(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_bytes("\ufeffName, ID ,Section\nZoë,z1,A\n".encode())
    assert roster.load(path) == {"z1": roster.Student("z1", "Zoë", "")}


def test_grade_with_a_bad_roster_stops_with_a_message(tmp_path, capsys):
    (tmp_path / "class").mkdir()
    assert grade.main([str(tmp_path / "class"), "--out", str(tmp_path / "out"), "--roster",
                       str(tmp_path / "none.csv"), *OPTIONS]) == 2
    assert "error: the roster" in capsys.readouterr().err


# --------------------------------------------------------------------------- resubmissions and regrades


def test_only_the_newest_version_is_graded_and_the_older_is_named(ta_class):
    _, _, out, _, _ = ta_class
    assert read_grades(out)["carol"]["code_total"] == "90"
    extra = results_of(out, "carol")["extra_data"]
    assert extra["submission"] == "carol__2.zip" and extra["superseded"] == ["carol.zip"]
    feedback = (out / "feedback" / "carol.md").read_text()
    assert "`carol__2.zip` is your latest file" in feedback and "not graded (older): `carol.zip`" in feedback
    assert not (out / "results" / "carol__2.json").exists()


def test_version_rule():
    assert resubmit.split("alice__2") == ("alice", 2) and resubmit.split("alice") == ("alice", 1)
    assert resubmit.split("a__b") == ("a__b", 1) and resubmit.split("x_2") == ("x_2", 1)
    paths = {sid: [Path(f"{sid}.zip")] for sid in ("alice", "alice__3", "alice__2", "bob")}
    chosen, older = resubmit.latest(paths)
    assert chosen == {"alice": [Path("alice__3.zip")], "bob": [Path("bob.zip")]}
    assert older == {"alice": [Path("alice.zip"), Path("alice__2.zip")]}
    twice, _ = resubmit.latest({"dup": [Path("dup.zip"), Path("dup.tar")]})
    assert len(twice["dup"]) == 2  # the same version twice: grade_one reports an error naming both


def test_a_regrade_shows_in_the_feedback_and_keeps_the_earlier_grade(ta_class, tmp_path):
    root, submissions, out, roster_path, _ = ta_class
    work, again = tmp_path / "submissions", tmp_path / "out"
    shutil.copytree(submissions, work)
    shutil.copytree(out, again)
    make_zip(work / "carol__3.zip", student_files(REPO / "assignment"))  # a third, worse, version
    assert grade.main([str(work), "--out", str(again), "--only", "carol", *OPTIONS]) == 0
    results = results_of(again, "carol")
    assert results["score"] == 0 and results["extra_data"]["superseded"] == ["carol.zip", "carol__2.zip"]
    assert results["extra_data"]["history"][-1]["score"] == 90 and \
        results["extra_data"]["history"][-1]["submission"] == "carol__2.zip"
    feedback = (again / "feedback" / "carol.md").read_text()
    assert "Regraded: this replaces the earlier grade of 90/90 for `carol__2.zip`" in feedback
    for sid in ("alice", "bob", "erin", "zed"):  # the others are untouched
        assert (again / "results" / f"{sid}.json").read_text() == (out / "results" / f"{sid}.json").read_text()


# --------------------------------------------------------------------------- export


def rows_of(text: str):
    return list(csv.reader(io.StringIO(text)))


def test_export_from_a_grading_folder_in_each_format(ta_class, tmp_path):
    _, _, out, roster_path, _ = ta_class
    for fmt in export.FORMATS:
        assert export.main([str(out), "--format", fmt, "--roster", str(roster_path), "--out",
                            str(tmp_path / f"{fmt}.csv"), "--canvas-assignment-id", "77"]) == 0
    canvas = rows_of((tmp_path / "canvas.csv").read_text())
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Deep Compression (77)"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "90"]
    assert canvas[2:] == [["Alice Liddell", "1001", "alice", "", "", "90"], ["Bob Marley", "", "bob", "", "", "0"],
                          ["Carol King", "1003", "carol", "", "", "90"],
                          ["Erin Brockovich", "1005", "erin", "", "", "0"], ["zed", "", "zed", "", "", "0"]]
    moodle = rows_of((tmp_path / "moodle.csv").read_text())
    assert moodle[0] == ["identifier", "Full name", "Deep Compression"]
    assert moodle[1:] == [["1001", "Alice Liddell", "90"], ["bob", "Bob Marley", "0"], ["1003", "Carol King", "90"],
                          ["1005", "Erin Brockovich", "0"], ["zed", "", "0"]]
    plain = list(csv.DictReader(io.StringIO((tmp_path / "csv.csv").read_text())))
    assert list(plain[0]) == ["student_id", "name", "lms_id", "prune", "quantize", "huffman", "deploy_total", "total",
                              "points_possible", "status"]
    assert plain[3] == {"student_id": "erin", "name": "Erin Brockovich", "lms_id": "1005", "prune": "0",
                        "quantize": "0", "huffman": "0", "deploy_total": "0", "total": "0", "points_possible": "90",
                        "status": roster.MISSING}


def test_export_of_part_twos_own_total(ta_class, tmp_path, capsys):
    """``--total deploy``: Part 2's total, out of its points, in its own gradebook column (separate scoring)."""
    _, _, out, roster_path, _ = ta_class
    assert export.main([str(out), "--format", "canvas", "--total", "deploy", "--out", str(tmp_path / "c.csv")]) == 0
    canvas = rows_of((tmp_path / "c.csv").read_text())
    assert canvas[0][-1] == homework.DEPLOY_GRADEBOOK_COLUMN and canvas[1][-1] == f"{homework.DEPLOY_POINTS:g}"
    assert {row[2]: row[-1] for row in canvas[2:]}["alice"] == "0"  # alice hands in Part 1 only
    plain = list(csv.DictReader(io.StringIO(export.render("csv", export.read_grades(out, "deploy")))))
    assert list(plain[0])[3:-3] == list(homework.DEPLOY_PART_NAMES)
    assert "deploy_total" in list(csv.DictReader(io.StringIO(export.render("csv", export.read_grades(out)))))[0]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "grades.csv").write_text("student_id,prune,quantize,huffman,code_total,status\na,1,0,0,1,ok\n")
    assert export.main([str(tmp_path / "old"), "--format", "csv", "--total", "deploy", "--out",
                        str(tmp_path / "x.csv")]) == 2
    assert "has no deploy_total column" in capsys.readouterr().err


def test_export_prefers_the_leaderboards_final_grades(tmp_path):
    (tmp_path / "final_grades.csv").write_text("student_id,prune,quantize,huffman,ranking,total\n"
                                               "alice,70,10,10,10,100\nbob,35,10,0,5,50\n")
    (tmp_path / "grades.csv").write_text("student_id,prune,quantize,huffman,code_total,status\nalice,0,0,0,0,ok\n")
    text = export.render("canvas", export.read_grades(tmp_path), assignment="HW3")
    assert rows_of(text) == [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "HW3"],
                             ["Points Possible", "", "", "", "", "100"],
                             ["alice", "", "alice", "", "", "100"], ["bob", "", "bob", "", "", "50"]]
    plain = list(csv.DictReader(io.StringIO(export.render("csv", export.read_grades(tmp_path)))))
    assert plain[1]["ranking"] == "5" and plain[1]["total"] == "50" and plain[1]["points_possible"] == "100"


def test_export_errors_are_plain(tmp_path, capsys):
    target = str(tmp_path / "x.csv")
    assert export.main([str(tmp_path / "nowhere"), "--format", "csv", "--out", target]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert export.main([str(tmp_path), "--format", "csv", "--out", target]) == 2
    assert "neither final_grades.csv" in capsys.readouterr().err
    (tmp_path / "grades.csv").write_text("name,score\nx,1\n")
    assert export.main([str(tmp_path), "--format", "csv", "--out", target]) == 2
    assert "no student_id or code_total column" in capsys.readouterr().err
    (tmp_path / "grades.csv").write_text("student_id,prune,quantize,huffman,code_total,status\na,1,0,0,1,ok\n")
    assert export.main([str(tmp_path), "--format", "csv", "--out", target, "--roster", str(tmp_path / "r")]) == 2
    assert "the roster" in capsys.readouterr().err
    assert export.main([str(tmp_path), "--format", "csv", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main([str(tmp_path), "--format", "blackboard", "--out", target])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(export.ExportError, match="unknown format"):
        export.render("xls", export.read_grades(tmp_path))
    assert not (tmp_path / "x.csv").exists()


# --------------------------------------------------------------------------- summary


def test_summary_of_the_class_with_its_leaderboard(ta_class, tmp_path):
    from grader import summary
    _, _, out, _, _ = ta_class
    board = tmp_path / "board"
    board.mkdir()
    (board / "leaderboard.csv").write_text(
        "rank,student_id,accuracy,compression_rate,compressed_bytes,qualified,points,status\n"
        "1,alice,70.00,100.00,813786,yes,10,ranked\n2,carol,60.00,50.00,1627572,yes,5,ranked\n"
        ",bob,50.00,40.00,2034465,no,0,below the gate (58.00%)\n,erin,,,,no,0,missing: no .ptmodel submitted\n")
    assert summary.main([str(out), "--leaderboard", str(board), "--out", str(tmp_path / "s")]) == 0
    text = (tmp_path / "s" / "summary.md").read_text()
    assert "5 students graded" in text and "ok 3" in text
    assert "| prune | 70 | 5 | " in text and "| total | 90 | 5 |" in text and "| onnx | 10 | 5 |" in text
    assert "- total: 0 ×3, 90 ×2" in text
    assert f"| deploy_total | {homework.DEPLOY_POINTS:g} | 5 |" in text  # Part 2: nobody hands it in
    assert "failed by 1 of 3" in text  # bob, the skeleton, fails what alice and carol pass
    assert "2 of 4 students ranked" in text and "| compression rate (×) | 50.00 | 75.00 | 100.00 |" in text
    assert "| erin | missing: no submission |" in text and "| zed | rejected: the submission is empty" in text
    page = (tmp_path / "s" / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "erin" in page and "Tests most students failed" in page
    for forbidden in ("<script", "http:", "https:", "<link", "src=\"/", "src=\"file"):
        assert forbidden not in page
    assert summary.main([str(out), "--out", str(tmp_path / "s2")]) == 0  # no leaderboard: said so
    assert "No leaderboard found" in (tmp_path / "s2" / "summary.md").read_text()


def test_summary_errors_are_plain(tmp_path, capsys):
    from grader import summary
    assert summary.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert summary.main([str(tmp_path)]) == 2
    assert "grade the class first" in capsys.readouterr().err
    assert summary.main([str(tmp_path), "--leaderboard", str(tmp_path)]) == 2
    assert "holds no leaderboard.csv" in capsys.readouterr().err


def test_the_leaderboard_takes_the_newest_model_under_the_plain_id():
    from grader.leaderboard import Submission
    found = [Submission(sid, Path(f"{sid}.ptmodel"), sid) for sid in ("alice", "alice__2", "bob", "bob__1", "carl__3")]
    kept, problems = resubmit.latest_models(found, {"dora": "invalid: too big", "erik": "invalid: twice"})
    assert [(s.student_id, s.path.name) for s in kept] == [("alice", "alice__2.ptmodel"), ("carl", "carl__3.ptmodel")]
    assert problems["bob"].startswith("invalid: more than one .ptmodel") and "bob__1.ptmodel" in problems["bob"]
    assert problems["dora"] == "invalid: too big" and "alice" not in problems
    kept, problems = resubmit.latest_models([Submission("dora__2", Path("dora__2.ptmodel"), "x")],
                                            {"dora": "invalid: too big"})
    assert [s.student_id for s in kept] == ["dora"] and "dora" not in problems  # the newer file replaces it
