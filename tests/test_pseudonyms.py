"""The leaderboard under pseudonyms (grader/pseudonyms.py): no id in what is published, the same names every run."""
import csv
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from grader import leaderboard, pseudonyms
from grader.measure import FixedAccuracy
from tests.test_leaderboard import save_whole, shared_state

IDS = ("s1084421", "s1084422", "s1084423", "s1084424")
MISSING = "s1084429"
"""In grades.csv only: no model."""
CORRECT = {"s1084421": 6500, "s1084422": 7000, "s1084423": 5000}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_whole(shared_state(1, keep=0.02), folder / f"{IDS[0]}.ptmodel")
    save_whole(shared_state(2, keep=0.2), folder / f"{IDS[1]}.ptmodel")
    torch.save(shared_state(3), folder / f"{IDS[2]}.ptmodel")
    (folder / f"{IDS[3]}.ptmodel").write_bytes(b"not a model")
    grades = folder.parent / "grades.csv"
    grades.write_text("student_id,prune,quantize,huffman,code_total,status\n"
                      + "".join(f"{sid},70,10,10,90,ok\n" for sid in (*IDS, MISSING)))
    return folder, grades


@pytest.fixture(scope="module")
def board(models, tmp_path_factory):
    """The leaderboard of ``models`` with ``--pseudonyms`` (and its default key), measured once."""
    folder, grades = models
    out = tmp_path_factory.mktemp("board")
    leaderboard.run(folder, out, FixedAccuracy(CORRECT), grades=grades, jobs=0, progress=False, pseudonyms=True)
    return out


def measured_before(board: Path, out: Path) -> Path:
    """``out`` with the measurements of ``board`` in its cache, so that a run there only publishes."""
    shutil.copytree(board / "cache", out / "cache")
    return out


def read(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_no_student_id_in_any_published_file(board):
    out = board
    public = sorted(p for p in (out / "public").rglob("*") if p.is_file())
    assert [p.name for p in public] == ["leaderboard.csv", "leaderboard.html", "leaderboard.md", "leaderboard.png"]
    for path in public:
        data = path.read_bytes()
        for sid in (*IDS, MISSING):
            assert sid.encode() not in data, (path.name, sid)
    names = {row["student_id"]: row["pseudonym"] for row in read(out / "private" / "pseudonyms.csv")}
    assert sorted(names) == sorted((*IDS, MISSING)) and len(set(names.values())) == len(names)
    board = read(out / "public" / "leaderboard.csv")
    real = read(out / "leaderboard.csv")  # the staff's ranking, under ids, beside it
    assert [(names[r["student_id"]], r["rank"], r["points"], r["status"]) for r in real if r["qualified"] == "yes"] \
        == [(r["student_id"], r["rank"], r["points"], r["status"]) for r in board if r["qualified"] == "yes"]
    assert {r["student_id"] for r in board} == set(names.values())
    assert names[MISSING] in (out / "public" / "leaderboard.html").read_text()
    key = out / "private" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert not any("pseudonym" in p.name for p in public)


def test_pseudonyms_are_stable_with_the_key_and_change_without_it(models, board, tmp_path):
    folder, _ = models
    key = tmp_path / "course.key"
    first = leaderboard.run(folder, measured_before(board, tmp_path / "a"), FixedAccuracy(CORRECT), jobs=0,
                            progress=False, pseudonyms=True, pseudonym_key=key)
    leaderboard.run(folder, measured_before(board, tmp_path / "b"), FixedAccuracy(CORRECT), jobs=0, progress=False,
                    pseudonyms=True, pseudonym_key=key)
    leaderboard.run(folder, measured_before(board, tmp_path / "c"), FixedAccuracy(CORRECT), jobs=0, progress=False,
                    pseudonyms=True)
    a, b, c = (read(tmp_path / n / "private" / "pseudonyms.csv") for n in "abc")
    assert a == b and a != c and len(a) == len(first)
    assert not (tmp_path / "a" / "private" / "pseudonym.key").exists()  # the course key was used
    assert (tmp_path / "a" / "public" / "leaderboard.md").read_text() == \
        (tmp_path / "b" / "public" / "leaderboard.md").read_text()


def test_pseudonym_shape_and_collisions():
    key = bytes(range(32))
    name = pseudonyms.pseudonym(key, "s1")
    adjective, animal, digits = name.split("-")
    assert adjective in pseudonyms.ADJECTIVES and animal in pseudonyms.ANIMALS and len(digits) == 4
    assert name == pseudonyms.pseudonym(key, "s1") != pseudonyms.pseudonym(key, "s2")
    many = pseudonyms.assign(key, (f"s{i}" for i in range(3000)))  # some short names collide: longer ones then
    assert len(set(many.values())) == 3000


def test_bad_keys_are_explained(tmp_path, capsys):
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    with pytest.raises(pseudonyms.PseudonymError, match="not a hex key"):
        pseudonyms.load_or_create_key(bad)
    bad.write_text("abcd")
    with pytest.raises(pseudonyms.PseudonymError, match="too short"):
        pseudonyms.load_or_create_key(bad)
    with pytest.raises(pseudonyms.PseudonymError, match="must not be inside the published folder"):
        pseudonyms.key_file(tmp_path, tmp_path / "public" / "k")
    (tmp_path / "subs").mkdir()
    assert leaderboard.main([str(tmp_path / "subs"), "--out", str(tmp_path / "o"), "--pseudonyms",
                             "--pseudonym-key", str(bad)]) == 2
    assert "error: the pseudonym key" in capsys.readouterr().err
