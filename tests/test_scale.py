"""Past one machine (grader/shards.py): a class graded and ranked in shards, as separate processes, then merged,
gives byte for byte what one machine gives; a shard killed midway is finished by running it again; merge refuses
shards that do not fit together. The cluster recipes in deploy/cluster/ are checked too.

The class: the solutions, the skeleton, two buggy variants, a resubmission, a hostile submission that forges
results into the output folders, and a roster student who hands in nothing; then a handful of .ptmodels measured
on a tiny CIFAR-10.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grader import grade, shards, variants
from tests.test_archives import make_zip
from tests.test_grade import ISOLATION, student_files, write_tree
from tests.test_leaderboard import shared_state
from tests.tinycifar import write_tiny_cifar

REPO = Path(__file__).resolve().parent.parent
N = 3
PINNED = [0, 1, 5, 4]
"""shard_of(id, 8) of alice, bob, carol, Li_Wei: int(sha256(id)) mod 8."""
OPTIONS = ["--no-progress", "--isolation", ISOLATION]
ROSTER = "id,name\nalice,A\nbob,B\ncarol,C\ndave,D\nerin,E\nfrank,F\ngina,G\n"
SUBMITTED = ("alice", "bob", "carol", "dave", "frank", "gina")
FORGE = """
import os as _os
for _p in {targets!r}:
    try:
        _os.makedirs(_os.path.dirname(_p), exist_ok=True)
        open(_p, "w").write('{{"kind": "grade", "shard": 0, "of": 1, "score": 90}}')
    except Exception:
        pass
_os._exit(0)
"""


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, **kwargs)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grader", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def outputs(out: Path, internal=("shards", "cache")) -> dict:
    """Every file under ``out`` but the shard markers and the leaderboard's cache (it records seconds taken)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in internal}


def refused(result: subprocess.CompletedProcess, message: str) -> bool:
    return result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded on one machine and in N shards (one of them killed once and run again)."""
    root = tmp_path_factory.mktemp("scale")
    submissions, single, sharded = root / "class", root / "single", root / "sharded"
    submissions.mkdir()
    solutions, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    make_zip(submissions / "alice.zip", solutions)
    write_tree(submissions / "bob", skeleton)
    make_zip(submissions / "carol.zip", skeleton)
    make_zip(submissions / "carol__2.zip", solutions)
    for sid, name in (("dave", variants.names()[0]), ("gina", variants.names()[-1])):
        make_zip(submissions / f"{sid}.zip", {**solutions, **{f: t.encode() for f, t in
                                                             variants.variant_files(name).items()}})
    targets = [str(out / part) for out in (single, sharded)
               for part in ("results/alice.json", "grades.csv", "shards/0-of-1.json")]
    make_zip(submissions / "frank.zip", {f: data + FORGE.format(targets=targets).encode()
                                         for f, data in solutions.items()})
    (root / "roster.csv").write_text(ROSTER)
    common = ["--roster", str(root / "roster.csv"), *OPTIONS]
    counts = {k: [sid for sid in SUBMITTED if shards.shard_of(sid, N) == k] for k in range(N)}
    killed = max(counts, key=lambda k: len(counts[k]))
    first = min(counts, key=lambda k: len(counts[k]))
    one = start("grade", str(submissions), "--out", str(single), "--jobs", "1", *common)
    done = start("grade", str(submissions), "--out", str(sharded), "--shard", f"{first}/{N}", "--jobs", "1", *common)
    assert (one.wait(timeout=900), done.wait(timeout=900)) == (0, 0)
    run = start("grade", str(submissions), "--out", str(sharded), "--shard", f"{killed}/{N}", "--jobs", "1", *common)
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline and \
                not any((sharded / "results" / f"{sid}.json").exists() for sid in counts[killed]):
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    midway = {"done": [sid for sid in counts[killed] if (sharded / "results" / f"{sid}.json").exists()],
              "marker": (sharded / "shards" / f"{killed}-of-{N}.json").exists(),
              "merge": cli("merge", str(sharded)), "grades": (sharded / "grades.csv").exists()}
    runs = [start("grade", str(submissions), "--out", str(sharded), "--shard", f"{k}/{N}", "--jobs", "1", *common)
            for k in range(N) if k != first]
    assert [r.wait(timeout=900) for r in runs] == [0] * (N - 1)
    merged = cli("merge", str(sharded))
    return {"root": root, "class": submissions, "single": single, "sharded": sharded, "killed": killed, "first": first,
            "counts": counts, "midway": midway, "merged": merged, "common": common}


def test_shards_merged_are_byte_identical_to_one_machine(graded):
    assert graded["merged"].returncode == 0, graded["merged"].stderr
    single, sharded = outputs(graded["single"]), outputs(graded["sharded"])
    assert sorted(single) == sorted(sharded)
    assert {"grades.csv", "roster-check.txt", "results/erin.json", "feedback/frank.md"} <= set(single)
    assert [name for name in single if single[name] != sharded[name]] == []
    grades = (graded["single"] / "grades.csv").read_text()
    assert "alice,70,10,10,90,ok" in grades and "carol,70,10,10,90,ok" in grades and "erin,0,0,0,0,missing" in grades
    assert "frank,0,0,0,0" in grades  # the forger's writes went nowhere: its box sees no output folder
    assert sorted(p.name for p in (graded["sharded"] / "shards").iterdir()) == [f"{k}-of-{N}.json" for k in range(N)]
    assert [p.name for p in (graded["single"] / "shards").iterdir()] == ["0-of-1.json"]


def test_a_killed_shard_has_no_marker_merge_waits_and_a_rerun_finishes_it(graded):
    midway, killed = graded["midway"], graded["killed"]
    assert 1 <= len(midway["done"]) < len(graded["counts"][killed]) and not midway["marker"]
    assert refused(midway["merge"], f"{N - 1} of its {N} shards have not finished")
    assert f"{killed}/{N}" in midway["merge"].stderr and f"{graded['first']}/{N}" not in midway["merge"].stderr
    assert not midway["grades"]  # nothing class-wide was written from a part of the class
    marker = json.loads((graded["sharded"] / "shards" / f"{killed}-of-{N}.json").read_text())
    assert set(graded["counts"][killed]) <= set(marker["students"])


def test_a_shard_of_another_grader_version_is_refused(graded, tmp_path):
    out = tmp_path / "sharded"
    shutil.copytree(graded["sharded"], out)
    before = outputs(out)
    again = cli("grade", str(graded["class"]), "--out", str(out), "--shard", f"{graded['first']}/{N}", "--jobs", "2",
                *graded["common"], "--test-timeout", "59")  # another limit: another grader version
    assert again.returncode == 0, again.stderr
    assert (out / "grades.csv").read_bytes() == before["grades.csv"]  # a shard writes nothing class-wide
    result = cli("merge", str(out))
    assert refused(result, "different grader versions") and "run the shards" in result.stderr
    assert (out / "grades.csv").read_bytes() == before["grades.csv"]


# --------------------------------------------------------------------------- the leaderboard


@pytest.fixture(scope="module")
def ranked(graded, tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    data, models = write_tiny_cifar(root / "data", n_train=5, n_test=40), root / "models"
    models.mkdir()
    for seed, sid in enumerate(("alice", "carol", "carol__2"), 1):
        torch.save(shared_state(seed, keep=0.01), models / f"{sid}.ptmodel")
    shutil.copy(models / "alice.ptmodel", models / "dave.ptmodel")  # a tie
    (models / "frank.ptmodel").write_bytes(b"not a model")
    (root / "key").write_text("ab" * 32)
    common = ["--data-dir", str(data), "--grades", str(graded["single"] / "grades.csv"), "--gate", "0",
              "--jobs", "0", "--pseudonyms", "--pseudonym-key", str(root / "key")]
    one = cli("leaderboard", str(models), "--out", str(root / "single"), *common)
    assert one.returncode == 0, one.stderr
    parts = [start("leaderboard", str(models), "--out", str(root / "sharded"), "--shard", f"{k}/2", *common)
             for k in range(2)]
    assert [part.wait(timeout=900) for part in parts] == [0, 0]
    assert not (root / "sharded" / "leaderboard.csv").exists()
    return root, cli("merge", str(root / "sharded"))


def test_leaderboard_shards_merged_are_byte_identical_to_one_machine(ranked):
    root, merged = ranked
    assert merged.returncode == 0, merged.stderr
    single, sharded = outputs(root / "single"), outputs(root / "sharded")
    assert {"leaderboard.csv", "leaderboard.html", "leaderboard.png", "final_grades.csv", "public/leaderboard.csv",
            "details/alice.txt"} <= set(single)
    assert sorted(single) == sorted(sharded) and [n for n in single if single[n] != sharded[n]] == []
    board = (root / "single" / "leaderboard.csv").read_text()
    assert "frank" in board and "invalid" in board and "erin" in board and "missing" in board
    assert sum(line.split(",")[0] != "" for line in board.splitlines()[1:]) >= 3  # ranked rows


# --------------------------------------------------------------------------- markers that do not fit


def marker(out: Path, k: int, n: int, students=(), version="v1", settings=None) -> None:
    shards.finish(out, "grade", (k, n), version, settings or {"isolation": "bwrap"},
                  {sid: {"sha256": "x"} for sid in students})


def ids(k: int, n: int, count: int = 2) -> list:
    return [sid for sid in (f"s{i}" for i in range(200)) if shards.shard_of(sid, n) == k][:count]


@pytest.mark.parametrize("case, message", [
    ("none", "holds no shard markers"),
    ("two_ns", "different numbers of shards (N=2: shards 0, 1; N=3: shards 0)"),
    ("versions", "different grader versions"),
    ("settings", "other settings"),
    ("overlap", "done by two shards"),
    ("wrong_shard", "belongs to shard"),
    ("damaged", "damaged"),
])
def test_merge_refuses_shards_that_do_not_fit(tmp_path, case, message):
    out = tmp_path / "out"
    out.mkdir()
    if case != "none":
        marker(out, 0, 2, ids(0, 2))
        marker(out, 1, 2, ids(1, 2), version="v2" if case == "versions" else "v1",
               settings={"isolation": "basic"} if case == "settings" else None)
    if case == "two_ns":
        marker(out, 0, 3, ids(0, 3))
    if case == "overlap":
        marker(out, 1, 2, ids(1, 2) + ids(0, 2, 1))
    if case == "wrong_shard":
        marker(out, 1, 2, ids(1, 2) + ids(0, 2, 3)[2:])
    if case == "damaged":
        (out / "shards" / "1-of-2.json").write_text("{")
    with pytest.raises(shards.ShardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shards.merge(out)
    assert not (out / "grades.csv").exists()


def test_shard_options_are_checked():
    assert shards.parse("3/8") == (3, 8) and shards.parse(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1", "-1/4", "a/b", "0/0"):
        with pytest.raises(shards.ShardError, match="K"):
            shards.parse(bad)
    with pytest.raises(grade.GradingError, match="shard must be"):
        grade.grade(REPO, REPO / "never", shard=(2, 2))
    result = cli("grade", str(REPO), "--out", "/nonexistent", "--shard", "4/4")
    assert result.returncode == 2 and "N must be between" in result.stderr and "Traceback" not in result.stderr


def test_the_shard_rule_is_pinned_and_spreads_the_class():
    """The rule is part of the on-disk format (machines of one run must agree): pinned values, even spread."""
    assert [shards.shard_of(sid, 8) for sid in ("alice", "bob", "carol", "Li_Wei")] == PINNED
    sizes = [0] * 64
    for i in range(2000):
        sizes[shards.shard_of(f"student{i:04d}", 64)] += 1
    assert min(sizes) > 10 and max(sizes) < 60  # about 31 each: no shard is left empty or doubled
