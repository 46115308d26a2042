"""One class on many machines: ``--shard K/N`` on ``grade`` and ``leaderboard``, then ``python -m grader merge OUT``.

**Who is in which shard.** Student ``s`` (the id after cleaning and after
grouping resubmissions: ``alice__2.zip`` is ``alice``) belongs to shard
``int(sha256(s)) mod N``. The rule reads the id alone, so a late submission
moves nobody else, and every file of one student lands in the same shard.

**What a shard writes.** Its students' per-student results into the shared
``OUT`` (``results/`` and ``feedback/`` for grading, ``cache/`` for the
leaderboard) and, when it has finished, a marker ``OUT/shards/K-of-N.json``:
its kind, K and N, the grader version it ran, the settings the class-wide
files depend on and the students it did. A shard removes its own marker when
it starts, so a shard killed midway has none; run it again with the same
command and it resumes (what it finished is kept). No shard writes a
class-wide file (``grades.csv``, ``roster-check.txt``, the ranking and every
published file): the ranking's thirds need the whole class.

**Merging.** ``python -m grader merge OUT`` reads the markers and refuses,
saying what to do, when one is missing, damaged, duplicated or overlapping,
from another N, another grader version or other settings; otherwise it writes
the class-wide files from the per-student results. A run without ``--shard``
is shard 0 of 1 and ends with the same merge, so one machine and N machines
write the same bytes by construction. See docs/SCALE.md.
"""
import argparse
import hashlib
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from grader.files import write_atomic

FOLDER = "shards"
MARKER = re.compile(r"^(?P<k>[0-9]+)-of-(?P<n>[0-9]+)\.json$")
MAX_SHARDS = 100_000
MERGERS = {"grade": "grader.grade", "leaderboard": "grader.leaderboard", "onnx-leaderboard": "grader.onnx_leaderboard"}
"""Each kind of run and the module whose ``merge(out)`` writes its class-wide files (imported when used, so the
Gradescope bundle needs no leaderboard module)."""
Shard = Tuple[int, int]
"""``(K, N)``: shard K of N, 0 <= K < N."""


class ShardError(Exception):
    """A shard cannot run or the shards cannot be merged; the message says why and what to do."""


def parse(text: str) -> Shard:
    """``"3/8"`` -> ``(3, 8)``; ``ShardError`` for anything else."""
    match = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", text or "")
    if not match:
        raise ShardError(f"--shard takes K/N (shard K of N, counted from 0: 0/4 ... 3/4), not {text!r}")
    k, n = int(match[1]), int(match[2])
    if not 1 <= n <= MAX_SHARDS or not 0 <= k < n:
        raise ShardError(f"--shard {k}/{n}: N must be between 1 and {MAX_SHARDS:,} and K between 0 and N-1 "
                         "(a Slurm array or Kubernetes index counts from 0)")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The shard (of ``n``) that student ``student`` belongs to."""
    return int.from_bytes(hashlib.sha256(student.encode("utf-8")).digest(), "big") % n


def belongs(student: str, shard: Optional[Shard]) -> bool:
    """Whether ``student`` is in ``shard`` (every student is in ``None``, the whole class)."""
    return shard is None or shard_of(student, shard[1]) == shard[0]


def name(shard: Shard) -> str:
    return f"{shard[0]}/{shard[1]}"


def _path(out: Path, shard: Shard) -> Path:
    return Path(out) / FOLDER / f"{shard[0]}-of-{shard[1]}.json"


def start(out: Path, shard: Optional[Shard]) -> None:
    """Before a run: a shard removes its own marker; a whole-class run removes every marker (it redoes them all)."""
    if shard is None:
        for stale in (Path(out) / FOLDER).glob("*.json"):
            stale.unlink()
    else:
        _path(out, shard).unlink(missing_ok=True)


def finish(out: Path, kind: str, shard: Optional[Shard], version: str, settings: dict, students: Dict[str, dict],
           extra: Optional[dict] = None) -> None:
    """After a run: record that ``shard`` (``None``: the whole class, shard 0 of 1) did ``students``."""
    shard = shard or (0, 1)
    record = {"kind": kind, "shard": shard[0], "of": shard[1], "grader_version": version, "settings": settings,
              "students": dict(sorted(students.items())), "extra": extra or {}}
    write_atomic(_path(out, shard), json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class Class:
    """Every shard of one run, checked to fit together."""
    kind: str
    n: int
    version: str
    settings: dict
    students: Dict[str, dict]
    """What each shard recorded about each of its students."""
    extras: Tuple[dict, ...]
    """Each shard's ``extra``, in shard order."""


def _fail(out: Path, problem: str, remedy: str) -> None:
    raise ShardError(f"cannot merge {out}: {problem}.\n{remedy}")


def collect(out: Path, kind: Optional[str] = None) -> Class:
    """The markers of ``out``, checked: one kind, one N, every shard once, one grader version, one set of
    settings, no student twice or in the wrong shard. ``ShardError`` says what is wrong and what to do."""
    out = Path(out)
    paths = sorted((out / FOLDER).glob("*.json")) if (out / FOLDER).is_dir() else []
    if not paths:
        _fail(out, f"it holds no shard markers ({FOLDER}/K-of-N.json)",
              "Run `grade` or `leaderboard` with --shard K/N and this folder as --out for every K first; "
              "a run without --shard merges by itself.")
    records = []
    for path in paths:
        match = MARKER.match(path.name)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            ok = match and record["shard"] == int(match["k"]) and record["of"] == int(match["n"]) \
                and isinstance(record["students"], dict) and isinstance(record["settings"], dict)
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            _fail(out, f"the marker {FOLDER}/{path.name} is damaged or not a marker",
                  "Delete it and run that shard again with the same command.")
        records.append(record)
    kinds = sorted({str(r["kind"]) for r in records})
    if len(kinds) > 1 or (kind and kinds != [kind]) or kinds[0] not in MERGERS:
        _fail(out, f"its markers come from {' and '.join(kinds)} runs" + (f", not {kind}" if kind else ""),
              "Give grading and the leaderboard an --out folder each.")
    by_n: Dict[int, List[int]] = {}
    for r in records:
        by_n.setdefault(r["of"], []).append(r["shard"])
    if len(by_n) > 1:
        described = "; ".join(f"N={n}: shards {', '.join(map(str, sorted(ks)))}" for n, ks in sorted(by_n.items()))
        _fail(out, f"its markers come from runs with different numbers of shards ({described})",
              f"Keep one run: delete the {FOLDER}/*-of-N.json of the other N (the results stay and are reused), "
              "then run every shard of the N you keep.")
    n = records[0]["of"]
    missing = sorted(set(range(n)) - {r["shard"] for r in records})
    if missing:
        listed = ", ".join(f"{k}/{n}" for k in missing[:20]) + (" ..." if len(missing) > 20 else "")
        _fail(out, f"{len(missing)} of its {n} shards have not finished ({listed}: no marker)",
              "Run them (again) with the same command and --shard K/N; a shard killed midway resumes where it stopped.")
    versions: Dict[str, List[int]] = {}
    for r in records:
        versions.setdefault(r["grader_version"], []).append(r["shard"])
    if len(versions) > 1:
        described = "; ".join(f"version {v}: shards {', '.join(map(str, ks[:10]))}{' ...' if len(ks) > 10 else ''}"
                              for v, ks in sorted(versions.items(), key=lambda item: -len(item[1])))
        _fail(out, f"its shards were graded by different grader versions ({described})",
              "Every shard must run the same grader: update the checkout on every machine, then run the shards "
              "of the other versions again (students already graded by the current version are skipped).")
    settings = records[0]["settings"]
    odd = [r["shard"] for r in records if r["settings"] != settings]
    if odd:
        _fail(out, f"shards {', '.join(map(str, odd[:10]))} ran with other settings than shard 0 "
              f"({json.dumps(settings, sort_keys=True)})",
              "Run every shard with the same options (gate, grades, roster, pseudonyms...), then merge again.")
    students: Dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r["shard"]):
        for student, facts in r["students"].items():
            if student in students:
                _fail(out, f"student {student!r} was done by two shards",
                      f"The markers were edited or copied: delete {FOLDER}/ and run every shard again "
                      "(finished students are skipped).")
            if shard_of(student, n) != r["shard"]:
                _fail(out, f"student {student!r} is in the marker of shard {r['shard']}/{n} but belongs to shard "
                      f"{shard_of(student, n)}/{n}", f"Delete {FOLDER}/ and run every shard again.")
            students[student] = facts
    extras = tuple(r["extra"] for r in sorted(records, key=lambda r: r["shard"]))
    return Class(kinds[0], n, records[0]["grader_version"], settings, students, extras)


def merge(out: Path) -> str:
    """Write the class-wide files of ``out`` from its shards; returns a line saying what was merged."""
    out = Path(out)
    return importlib.import_module(MERGERS[collect(out).kind]).merge(out)


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard", metavar="K/N", help="do only shard K of N (from 0) of the class and write no "
                        "class-wide file; `python -m grader merge OUT` does that once every shard is done "
                        "(docs/SCALE.md)")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader merge", description="Write grades.csv (a grading "
                                     "folder) or the ranking and every published file (a leaderboard folder) "
                                     "from the per-student results of every shard (docs/SCALE.md).")
    parser.add_argument("out", type=Path, help="the --out folder every shard wrote into")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"{args.out} is not a folder")
    try:
        print(merge(args.out))
    except ShardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
