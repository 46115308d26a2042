"""Resubmissions and regrades: which file of a student is graded, and what the feedback says about the others.

**The rule.** A file named ``<id>__<n>`` plus its suffix (two underscores, then
a whole number: ``alice__2.zip``, ``alice__3``) is version *n* of student
``<id>``; a plain ``alice.zip`` is version 1. Only the highest version is
graded; the lower ones are named in the feedback and in
``extra_data["superseded"]`` of the results. Two files with the same id and
the same version (``alice.zip`` and ``alice.tar``) are still an error, which
names both: the grader never guesses. The rule uses names, not modification
times, because copying a folder or downloading it again from the course site
changes the times but not the names; so a rerun grades the same file.

**Regrades.** When a student's results are replaced by different ones (another
file, another grader version or another score), the earlier grade is kept in
``extra_data["history"]`` and the feedback starts with a line saying what was
replaced. Grading the same file again with the same grader (``--force``) adds
nothing.
"""
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

if TYPE_CHECKING:
    from grader.grade import Results

VERSIONED = re.compile(r"^(?P<id>.+?)__(?P<n>[0-9]{1,6})$")
MAX_HISTORY = 20


def split(sid: str) -> Tuple[str, int]:
    """``"alice__2"`` -> ``("alice", 2)``; an id without a version number is version 1."""
    match = VERSIONED.match(sid)
    return (match["id"], int(match["n"])) if match else (sid, 1)


def latest(found: Dict[str, List[Path]]) -> Tuple[Dict[str, List[Path]], Dict[str, List[Path]]]:
    """Group ``find_submissions``'s ids by student; return (the files to grade, the older files) by student id."""
    versions: Dict[str, Dict[int, List[Path]]] = {}
    for sid, paths in found.items():
        student, number = split(sid)
        versions.setdefault(student, {}).setdefault(number, []).extend(paths)
    chosen, older = {}, {}
    for student, by_number in sorted(versions.items()):
        newest = max(by_number)
        chosen[student] = sorted(by_number[newest])
        superseded = [path for number in sorted(by_number) if number != newest for path in sorted(by_number[number])]
        if superseded:
            older[student] = superseded
    return chosen, older


def annotate(results: "Results", superseded: Sequence[Path], out: Path) -> "Results":
    """``results`` with the older files and, when it replaces a different grade in ``out``, that grade."""
    from grader.grade import Results
    try:
        previous = Results.read(out / "results" / f"{results.student_id}.json")
    except ValueError:
        previous = None
    history = list(previous.history) if previous else []
    if previous and (previous.sha256, previous.grader_version, previous.score) != \
            (results.sha256, results.grader_version, results.score):
        history.append({"score": previous.score, "max_score": previous.max_score, "submission": previous.submission,
                        "sha256": previous.sha256, "grader_version": previous.grader_version,
                        "status": previous.status})
    return replace(results, superseded=tuple(path.name for path in superseded), history=tuple(history[-MAX_HISTORY:]))


def feedback_lines(results: "Results") -> List[str]:
    """The feedback's lines about older files and earlier grades (none when there are neither)."""
    lines = []
    if results.superseded:
        names = ", ".join(f"`{name}`" for name in results.superseded)
        lines += [f"Resubmission: `{results.submission}` is your latest file and the one graded; "
                  f"not graded (older): {names}.", ""]
    if results.history:
        last = results.history[-1]
        score = last.get("score")
        points = f"{score:g}/{last.get('max_score') or 0:g}" if isinstance(score, (int, float)) else "?"
        lines += [f"Regraded: this replaces the earlier grade of {points} for `{last.get('submission')}` "
                  f"(status: {last.get('status')}, grader version {last.get('grader_version') or '?'})"
                  + (f"; {len(results.history)} earlier grades in all." if len(results.history) > 1 else "."), ""]
    return lines


def latest_models(submissions: Sequence, rejected: Dict[str, str]) -> Tuple[List, Dict[str, str]]:
    """A leaderboard's submissions (``.ptmodel`` or ``.onnx``) under the same rule: the highest version of each student, under
    the plain id. Returns them and ``rejected`` plus a problem for every student with two files of the same
    version (``alice.ptmodel`` and ``alice__1.ptmodel``)."""
    groups: Dict[str, Dict[int, list]] = {}
    for submission in submissions:
        student, number = split(submission.student_id)
        groups.setdefault(student, {}).setdefault(number, []).append(submission)
    kept, problems = [], dict(rejected)
    for student, by_number in sorted(groups.items()):
        number = max(by_number)
        newest = by_number[number]
        if len(newest) > 1:
            suffix = newest[0].path.suffix
            problems[student] = f"invalid: more than one {suffix} for this student with the same version (" + \
                ", ".join(s.path.name for s in newest) + f"); keep one, or number the newer <id>__2{suffix}"
        elif student in rejected and number == 1:
            continue  # alice__1.ptmodel beside a refused alice.ptmodel: the refusal stands
        else:
            problems.pop(student, None)  # a refused older file does not matter any more
            kept.append(replace(newest[0], student_id=student))
    return kept, problems
