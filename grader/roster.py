"""The class roster: who should have handed something in.

A roster is a CSV file with a header row and the columns ``id`` and ``name``,
optionally ``lms_id`` (the student's id in the course site: Canvas user id,
Moodle ID number or e-mail; used by ``python -m grader export``). Other
columns are ignored; the header is matched without regard to case or spaces.

``grade --roster roster.csv`` compares the roster with the submissions found:

* a roster student without a file gets results of 0 points with the status
  ``missing: no submission`` (so they appear in ``grades.csv``, in the
  leaderboard's ``final_grades.csv`` and in every export), unless results from
  a real file graded earlier exist, which are kept and reported;
* a file whose id is not in the roster is graded as usual and reported, so a
  typo in a file name is seen before grades are exported.

The comparison is printed and written to ``OUT/roster-check.txt`` (ids sorted), once for the whole
class: by the grading run, or by ``python -m grader merge`` when the class was graded in shards.
"""
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping

from grader import resubmit
from grader.files import write_atomic

if TYPE_CHECKING:
    from grader.grade import Setup

MISSING = "missing: no submission"
"""The status of a roster student who handed in nothing."""
REQUIRED = ("id", "name")
COLUMNS = ("id", "name", "lms_id")
HOW = "a roster is a CSV file whose first row names the columns id,name and optionally lms_id"


class RosterError(ValueError):
    """The roster cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Student:
    """One roster line."""

    id: str
    name: str
    lms_id: str = ""


def load(path: Path) -> Dict[str, Student]:
    """Read and check the roster at ``path``; students by id, in file order. Raises :class:`RosterError`."""
    from grader.homework import student_id
    path = Path(path)
    if not path.is_file():
        raise RosterError(f"the roster {path} does not exist or is not a file; {HOW}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise RosterError(f"the roster {path} is not UTF-8 text; save it again as CSV (UTF-8)") from None
    except OSError as error:
        raise RosterError(f"the roster {path} cannot be read ({error.strerror})") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip().lower().replace(" ", "_") for cell in next(reader, [])]
    absent = [column for column in REQUIRED if column not in header]
    if absent:
        raise RosterError(f"the roster {path} has no column {' or '.join(absent)} in its first row "
                          f"({','.join(header) or 'empty'}); {HOW}")
    where = {column: header.index(column) for column in COLUMNS if column in header}
    students: Dict[str, Student] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        values = {column: cells[index].strip() if index < len(cells) else "" for column, index in where.items()}
        sid = values["id"]
        if not sid:
            raise RosterError(f"the roster {path}, line {line}: the id is empty")
        if student_id(sid) != sid:
            raise RosterError(f"the roster {path}, line {line}: the id {sid!r} has characters a file name "
                              f"cannot carry; write it as submissions are named ({student_id(sid)!r})")
        if resubmit.VERSIONED.match(sid):
            raise RosterError(f"the roster {path}, line {line}: the id {sid!r} ends in __<number>, which file names "
                              f"use for resubmissions ({resubmit.split(sid)[0]!r}, version {resubmit.split(sid)[1]}); "
                              "write the student's plain id")
        if sid in students:
            raise RosterError(f"the roster {path}, line {line}: the id {sid!r} is listed twice")
        students[sid] = Student(sid, values["name"], values.get("lms_id", ""))
    if not students:
        raise RosterError(f"the roster {path} lists no student; {HOW}")
    return students


@dataclass(frozen=True)
class Check:
    """The roster against the submissions found."""

    missing: List[str]
    """Roster ids with no submission."""
    unknown: List[str]
    """Submission ids not in the roster."""
    kept: List[str]
    """Missing ids whose earlier results (from a file graded before) are kept."""

    def text(self, roster_path: Path, submissions: Path) -> str:
        """The report, for the terminal and ``roster-check.txt``."""
        lines = [f"roster {roster_path} against {submissions}:"]
        if not (self.missing or self.unknown):
            lines.append("  every roster student has a submission, and every submission is in the roster")
        if self.missing:
            lines.append(f"  {len(self.missing)} in the roster without a submission (0 points, "
                         f"status '{MISSING}'): {', '.join(self.missing)}")
        if self.kept:
            lines.append(f"  of those, results graded earlier from a file are kept for: {', '.join(self.kept)} "
                         "(delete their results/<id>.json to record them as missing)")
        if self.unknown:
            lines.append(f"  {len(self.unknown)} submissions not in the roster (graded; check the file names): "
                         f"{', '.join(self.unknown)}")
        return "\n".join(lines) + "\n"


def _has_real_results(out: Path, sid: str) -> bool:
    try:
        extra = json.loads((out / "results" / f"{sid}.json").read_text(encoding="utf-8"))["extra_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return extra.get("status") != MISSING


def compare(students: Mapping[str, Student], found: Iterable[str], out: Path) -> Check:
    """Who is missing, who is unknown, and whose earlier results stay."""
    found = set(found)
    missing = [sid for sid in students if sid not in found]
    return Check(missing, sorted(found - set(students)), [sid for sid in missing if _has_real_results(out, sid)])


def record(students: Mapping[str, Student], found: Iterable[str], out: Path, setup: "Setup") -> Check:
    """Write 0-point results for every missing student; return the check (the report is class-wide:
    :func:`report`, written when the class is merged)."""
    from grader import grade
    check = compare(students, found, out)
    for sid in check.missing:
        if sid not in check.kept:
            grade.save(out, grade._not_graded(sid, Path("(none)"), "", setup, MISSING))
    return check


def report(out: Path, check: Check, roster_path: Path, submissions: Path) -> None:
    """Write ``out/roster-check.txt`` and print it."""
    text = check.text(roster_path, submissions)
    write_atomic(out / "roster-check.txt", text)
    print(text, end="", file=sys.stderr)
