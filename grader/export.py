"""Write the grades in the layout a course site imports: ``python -m grader export``.

    python -m grader export FOLDER --format csv|canvas|moodle --out FILE [--roster roster.csv] [--total deploy]
                            [--assignment NAME] [--canvas-assignment-id N] [--points-possible P]

FOLDER is a leaderboard folder holding ``final_grades.csv`` (code + ranking,
out of the homework's total) or a grading folder holding ``grades.csv`` (code only);
``final_grades.csv`` is used when both are there. ``--total deploy`` exports
Part 2's own total instead (``deploy_total``, out of ``homework.DEPLOY_POINTS``,
in the gradebook column ``homework.DEPLOY_GRADEBOOK_COLUMN``): with
``DEPLOY_SCORING = "separate"`` a course imports the two totals as two columns. The formats, what each
column means and how to import them: docs/TA.md ("Exporting grades").
"""
import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from grader import homework
from grader.files import write_atomic

FORMATS = ("csv", "canvas", "moodle")
TOTALS = ("code", "deploy")
"""What the exported grade is: Part 1's (with the ranking, and Part 2 when it is a bonus) or Part 2's own."""
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_ID = "identifier"
DEFAULT_ASSIGNMENT = homework.GRADEBOOK_COLUMN


class ExportError(ValueError):
    """The export cannot be written; the message says what to do."""


@dataclass(frozen=True)
class Grades:
    """The grades found in a folder."""

    source: Path
    rows: Dict[str, Dict[str, str]]
    """By student id: the source file's columns as text."""
    total_column: str
    points_possible: float
    parts: Sequence[str]


def _number(text: Optional[str]) -> float:
    try:
        value = float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _code_points(folder: Path) -> float:
    """The code's maximum as recorded in the folder's results, else the homework's."""
    for path in sorted((folder / "results").glob("*.json"))[:20]:
        try:
            maximum = json.loads(path.read_text(encoding="utf-8")).get("max_score")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(maximum, (int, float)) and maximum > 0:
            return float(maximum)
    return homework.CODE_POINTS


def read_grades(folder: Path, which: str = "code") -> Grades:
    """The final grades of ``folder``: its ``final_grades.csv``, else its ``grades.csv``; with ``which="deploy"``,
    Part 2's total. Raises ExportError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; give the leaderboard's --out folder (final_grades.csv) "
                          "or the grading --out folder (grades.csv)")
    if (folder / "final_grades.csv").is_file():
        path, total, parts = folder / "final_grades.csv", "total", (*homework.PART_NAMES, homework.RANKING_NAME)
        possible = homework.TOTAL_POINTS
    elif (folder / "grades.csv").is_file():
        path, total, parts = folder / "grades.csv", "code_total", homework.PART_NAMES
        possible = _code_points(folder)
    else:
        raise ExportError(f"{folder} holds neither final_grades.csv (write it with `python -m grader leaderboard "
                          "... --grades GRADED/grades.csv`) nor grades.csv (written by `python -m grader grade`)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "student_id" not in columns or total not in columns:
                raise ExportError(f"{path} has no student_id or {total} column ({','.join(columns) or 'empty'}); "
                                  "it is not a file the grader wrote: write it again")
            rows = {row["student_id"].strip(): {k: (v or "").strip() for k, v in row.items() if k}
                    for row in reader if (row.get("student_id") or "").strip()}
    except (UnicodeDecodeError, csv.Error) as error:
        raise ExportError(f"{path} cannot be read as CSV ({error}); write it again with the grader") from None
    if which == "deploy":
        if homework.DEPLOY_COLUMN not in columns:
            raise ExportError(f"{path} has no {homework.DEPLOY_COLUMN} column: it was written before Part 2 was "
                              "graded; grade the class again (python -m grader grade ... --force)")
        parts = tuple(part for part in homework.DEPLOY_PART_NAMES if part in columns)
        return Grades(path, rows, homework.DEPLOY_COLUMN, homework.DEPLOY_POINTS, parts)
    if homework.DEPLOY_COLUMN in columns:
        parts = (*parts, homework.DEPLOY_COLUMN)
    return Grades(path, rows, total, possible, parts)


def plain_rows(grades: Grades, roster: Optional[Mapping] = None) -> List[Dict[str, str]]:
    """Our own CSV: id, name, LMS id, every part, the total, the points possible and the status."""
    rows = []
    for sid in _order(grades, roster):
        row, student = grades.rows.get(sid, {}), (roster or {}).get(sid)
        status = row.get("status", "") if row else "no grade: not in " + grades.source.name
        rows.append({"student_id": sid, "name": student.name if student else "",
                     "lms_id": student.lms_id if student else "",
                     **{part: f"{_number(row.get(part)):g}" for part in grades.parts},
                     "total": f"{_number(row.get(grades.total_column)):g}",
                     "points_possible": f"{grades.points_possible:g}", "status": status})
    return rows


def _order(grades: Grades, roster: Optional[Mapping]) -> List[str]:
    """Roster order first (every roster student, graded or not), then the graded students not in it, sorted."""
    listed = list(roster or {})
    return listed + sorted(sid for sid in grades.rows if sid not in set(listed))


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def canvas(grades: Grades, roster: Optional[Mapping], assignment: str, assignment_id: str = "") -> str:
    """A Canvas gradebook import: the five student columns, one assignment column, a "Points Possible" row."""
    column = f"{assignment} ({assignment_id})" if assignment_id else assignment
    lines = [["Points Possible", "", "", "", "", f"{grades.points_possible:g}"]]
    for row in plain_rows(grades, roster):
        lines.append([row["name"] or row["student_id"], row["lms_id"], row["student_id"], "", "", row["total"]])
    return _csv([*CANVAS_FIXED, column], lines)


def moodle(grades: Grades, roster: Optional[Mapping], assignment: str) -> str:
    """A Moodle "Import grades: CSV file": an identifier to map users by, the full name, one grade column."""
    lines = [[row["lms_id"] or row["student_id"], row["name"], row["total"]] for row in plain_rows(grades, roster)]
    return _csv([MOODLE_ID, "Full name", assignment], lines)


def render(fmt: str, grades: Grades, roster: Optional[Mapping] = None, assignment: str = DEFAULT_ASSIGNMENT,
           assignment_id: str = "") -> str:
    """The export file's text in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "canvas":
        return canvas(grades, roster, assignment, assignment_id)
    if fmt == "moodle":
        return moodle(grades, roster, assignment)
    if fmt == "csv":
        rows = plain_rows(grades, roster)
        header = list(rows[0]) if rows else ["student_id", "name", "lms_id", *grades.parts, "total",
                                             "points_possible", "status"]
        return _csv(header, [list(row.values()) for row in rows])
    raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader export", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("folder", type=Path, help="leaderboard folder (final_grades.csv) or grading folder "
                                                  "(grades.csv)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the layout to write")
    parser.add_argument("--out", type=Path, required=True, help="the file to write")
    parser.add_argument("--roster", type=Path, help="CSV id,name[,lms_id]: names, LMS ids, and a row for "
                                                    "every roster student")
    parser.add_argument("--total", choices=TOTALS, default="code",
                        help="the grade exported: code (Part 1, with the ranking; Part 2 too when it is a bonus) "
                             "or deploy (Part 2's own total)")
    parser.add_argument("--assignment", help=f"the grade column's name (default: {DEFAULT_ASSIGNMENT!r}, or "
                                             f"{homework.DEPLOY_GRADEBOOK_COLUMN!r} with --total deploy)")
    parser.add_argument("--canvas-assignment-id", default="", help="Canvas's id of the assignment, to update it "
                                                                   "rather than create a new one")
    parser.add_argument("--points-possible", type=float, help="override the maximum (default: "
                                                              f"{homework.TOTAL_POINTS:g} with the ranking, "
                                                              f"{homework.CODE_POINTS:g} for the code alone)")
    args = parser.parse_args(argv)
    from grader.roster import RosterError, load
    try:
        grades = read_grades(args.folder, args.total)
        if args.points_possible is not None:
            if not (math.isfinite(args.points_possible) and args.points_possible > 0):
                raise ExportError("--points-possible must be a positive number")
            grades = Grades(grades.source, grades.rows, grades.total_column, args.points_possible, grades.parts)
        students = load(args.roster) if args.roster else None
        if args.out.is_dir():
            raise ExportError(f"--out {args.out} is a folder; give the name of the file to write")
        default = homework.DEPLOY_GRADEBOOK_COLUMN if args.total == "deploy" else DEFAULT_ASSIGNMENT
        text = render(args.format, grades, students, (args.assignment or "").strip() or default,
                      args.canvas_assignment_id.strip())
        write_atomic(args.out, text)
    except (ExportError, RosterError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if students is not None:
        ungraded = [sid for sid in students if sid not in grades.rows]
        unlisted = sorted(sid for sid in grades.rows if sid not in students)
        if ungraded:
            print(f"note: {len(ungraded)} roster students have no row in {grades.source.name} (exported as 0): "
                  f"{', '.join(ungraded)}", file=sys.stderr)
        if unlisted:
            print(f"note: {len(unlisted)} graded students are not in the roster (exported without a name or LMS "
                  f"id): {', '.join(unlisted)}", file=sys.stderr)
    print(f"{args.format}: {len(grades.rows) if students is None else len(set(grades.rows) | set(students))} "
          f"students, out of {grades.points_possible:g} points, from {grades.source} -> {args.out}")
    return 0
