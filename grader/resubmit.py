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
import json
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

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


def _previous(out: Path, sid: str) -> dict:
    try:
        previous = json.loads((out / "results" / f"{sid}.json").read_text(encoding="utf-8"))
        return previous if isinstance(previous, dict) and isinstance(previous.get("extra_data"), dict) else {}
    except (OSError, ValueError):
        return {}


def annotate(results: dict, superseded: Sequence[Path], out: Path) -> dict:
    """Add the older files and, when this replaces a different grade in ``out``, that grade, to ``results``."""
    extra = results["extra_data"]
    if superseded:
        extra["superseded"] = [path.name for path in superseded]
    previous = _previous(out, extra["student_id"])
    if previous:
        before = previous["extra_data"]
        history = [h for h in before.get("history", []) if isinstance(h, dict)]
        changed = (before.get("sha256"), before.get("grader_version"), previous.get("score")) != \
            (extra.get("sha256"), extra.get("grader_version"), results.get("score"))
        if changed:
            history.append({"score": previous.get("score"), "max_score": previous.get("max_score"),
                            "submission": before.get("submission"), "sha256": before.get("sha256"),
                            "grader_version": before.get("grader_version"), "status": before.get("status")})
        if history:
            extra["history"] = history[-MAX_HISTORY:]
    return results


def feedback_lines(extra: dict) -> List[str]:
    """The feedback's lines about older files and earlier grades (none when there are neither)."""
    lines = []
    if extra.get("superseded"):
        names = ", ".join(f"`{name}`" for name in extra["superseded"])
        lines += [f"Resubmission: `{extra.get('submission')}` is your latest file and the one graded; "
                  f"not graded (older): {names}.", ""]
    history = extra.get("history") or []
    if history:
        last = history[-1]
        score = last.get("score")
        points = f"{score:g}/{last.get('max_score') or 0:g}" if isinstance(score, (int, float)) else "?"
        lines += [f"Regraded: this replaces the earlier grade of {points} for `{last.get('submission')}` "
                  f"(status: {last.get('status')}, grader version {last.get('grader_version') or '?'})"
                  + (f"; {len(history)} earlier grades in all." if len(history) > 1 else "."), ""]
    return lines



def latest_models(submissions: Sequence, rejected: Dict[str, str]) -> Tuple[List, Dict[str, str]]:
    """The leaderboard's ``.ptmodel`` submissions under the same rule: the highest version of each student, under
    the plain id. Returns them and ``rejected`` plus a problem for every student with two files of the same
    version (``alice.ptmodel`` and ``alice__1.ptmodel``)."""
    from dataclasses import replace
    groups: Dict[str, Dict[int, list]] = {}
    for submission in submissions:
        student, number = split(submission.student_id)
        groups.setdefault(student, {}).setdefault(number, []).append(submission)
    kept, problems = [], dict(rejected)
    for student, by_number in sorted(groups.items()):
        number = max(by_number)
        newest = by_number[number]
        if len(newest) > 1:
            problems[student] = "invalid: more than one .ptmodel for this student with the same version (" + \
                ", ".join(s.path.name for s in newest) + "); keep one, or number the newer <id>__2.ptmodel"
        elif student in rejected and number == 1:
            continue  # alice__1.ptmodel beside a refused alice.ptmodel: the refusal stands
        else:
            problems.pop(student, None)  # a refused older file does not matter any more
            kept.append(replace(newest[0], student_id=student))
    return kept, problems
