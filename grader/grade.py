"""Grade a whole class: ``python -m grader grade SUBMISSIONS_DIR --out OUT_DIR [--jobs N]``.

Every archive (``.rar``, ``.zip``, ``.tar``, ``.tar.gz``, ``.7z``...) or folder
in SUBMISSIONS_DIR is one student, whose id is the file name without its
suffix (``.ptmodel`` files, for the leaderboard, are skipped). Each is
unpacked safely (:mod:`grader.archives`), then the judge (:mod:`grader.judge`)
runs the hidden suites, which send the student's code in its box
(:mod:`grader.box`) requests and score its answers. Results are written as
they come:

``OUT_DIR/results/<id>.json``
    Gradescope's ``results.json`` format (score, max_score, tests with
    name/score/max_score/output/visibility), plus ``extra_data`` with the
    submission's hash and the grader version used for resuming.
``OUT_DIR/feedback/<id>.md``
    every test, its points and its message, for the student.
``OUT_DIR/grades.csv``
    ``student_id,prune,quantize,huffman,code_total,status,isolation``,
    rebuilt from ``results/`` after every student.

A run that is stopped and started again skips every student whose results
were made from the same file (sha256) by the same grader version (the suites,
the reference solutions and the limits); ``--force`` grades everyone again.
"""
import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from grader.files import write_atomic
from grader import archives, box, judge, resubmit, roster

REPO = Path(__file__).resolve().parent.parent
PARTS = ("prune", "quantize", "huffman")
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
CSV_FIELDS = ["student_id", *PARTS, "code_total", "status", "isolation"]
VERSIONED = ("grader/suites", "grader/worker", "grader/box.py", "grader/judge.py", "grader/files.py")
"""What decides a score, besides the reference solutions and the limits (see ``grader_version``)."""


@dataclass(frozen=True)
class Setup:
    """Everything a grading run shares between students."""
    tests: Tuple[dict, ...]
    """The runner's ``--list``: name, part, todo, max_score of every test."""
    version: str
    limits: box.Limits = box.Limits()
    archive_limits: archives.Limits = archives.Limits()
    isolation: str = "bwrap"
    preload: Tuple[str, ...] = judge.DEFAULT_PRELOAD


# --------------------------------------------------------------------------- set-up


def list_tests() -> Tuple[dict, ...]:
    """The runner's test list, from a process of its own (it runs no student code)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", "grader.suites.runner", "--list"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"listing the tests failed:\n{done.stderr.strip()}")
    tests = tuple(json.loads(done.stdout))
    if not tests or any(t.get("part") not in PARTS for t in tests):
        raise RuntimeError("listing the tests gave no tests or an unknown part")
    return tests


def grader_version(limits: box.Limits, archive_limits: archives.Limits, repo: Path = REPO) -> str:
    """A hash of everything that decides a score: the suites, the box, the reference solutions and the limits."""
    from grader.assign import source_files
    digest = hashlib.sha256(json.dumps([asdict(limits), asdict(archive_limits)], sort_keys=True).encode())
    files = [p for top in VERSIONED for p in ([repo / top] if (repo / top).is_file() else (repo / top).rglob("*.py"))]
    files += [repo / "solutions" / relative for relative in source_files(repo / "solutions")]
    for path in sorted(files):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def find_submissions(folder: Path) -> Tuple[Dict[str, List[Path]], List[Path]]:
    """Map each student id to its submission(s) in ``folder``; also return the entries that are not submissions."""
    found: Dict[str, List[Path]] = {}
    ignored = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or archives.is_junk([entry.name]):
            continue
        if entry.is_dir() or (entry.is_file() and archives.archive_suffix(entry)):
            found.setdefault(safe_id(archives.student_id(entry)), []).append(entry)
        else:
            ignored.append(entry)
    return found, ignored


def submission_hash(sources: Sequence[Path]) -> str:
    """The hash that decides whether a student must be graded again."""
    return "+".join(archives.content_hash(p) for p in sources)


def safe_id(student: str) -> str:
    """The id as used in file names and the CSV: odd characters become ``_``."""
    return re.sub(r"[^\w.\-+@() ]", "_", student).strip() or "_"


# --------------------------------------------------------------------------- one student


def _entry(spec: dict, score: float, output: str, visibility: str = "visible") -> dict:
    return {"name": spec["name"], "score": score, "max_score": spec["max_score"],
            "status": "passed" if score >= spec["max_score"] else "failed", "output": output,
            "visibility": visibility, "tags": [spec["part"], spec["todo"]]}


def _results(student: str, source: Path, digest: str, setup: Setup, tests: List[dict], status: str) -> dict:
    """A results.json document from the scored ``tests`` (in the order of the test list)."""
    parts = {part: sum(t["score"] for t in tests if t["tags"][0] == part) for part in PARTS}
    maxima = {part: sum(spec["max_score"] for spec in setup.tests if spec["part"] == part) for part in PARTS}
    score = sum(parts.values())
    summary = ", ".join(f"{part} {parts[part]:g}/{maxima[part]:g}" for part in PARTS)
    return {"score": score, "max_score": sum(maxima.values()),
            "output": f"Code: {score:g}/{sum(maxima.values()):g} points ({summary}). Status: {status}",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
            "extra_data": {"student_id": student, "submission": source.name, "sha256": digest,
                           "grader_version": setup.version, "status": status, "parts": parts,
                           "isolation": setup.isolation, "sandbox": box.describe(setup.isolation)}}


def _not_graded(student: str, source: Path, digest: str, setup: Setup, status: str) -> dict:
    """Results with 0 points everywhere, for a submission that could not be graded."""
    tests = [_entry(spec, 0.0, f"Not graded: {status}") for spec in setup.tests]
    return _results(student, source, digest, setup, tests, status)


def _score(setup: Setup, recorded: List[dict]) -> List[dict]:
    """One entry per listed test, from the judge's own scores: finite, within [0, max]; a missing test scores 0."""
    by_name = {t.get("name"): t for t in recorded if isinstance(t, dict)}
    scored = []
    for spec in setup.tests:
        got = by_name.get(spec["name"])
        if got is None:
            scored.append(_entry(spec, 0.0, "Not run: the judge did not report this test."))
            continue
        try:
            score = float(got.get("score", 0.0))
        except (TypeError, ValueError):
            score = 0.0
        score = min(max(score, 0.0), float(spec["max_score"])) if math.isfinite(score) else 0.0
        visibility = got.get("visibility") if got.get("visibility") in VISIBILITIES else "visible"
        scored.append(_entry(spec, score, str(got.get("output", "")), visibility))
    return scored


def grade_one(student: str, sources: Sequence[Path], setup: Setup) -> dict:
    """Grade one student's submission; always returns a results document, never raises."""
    source, digest = sources[0], submission_hash(sources)
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources)
        return _not_graded(student, source, digest, setup, f"error: several submissions for this id ({names}); "
                           "keep one, or name the newer <id>__2 (docs/TA.md)")
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as work:
            try:
                submission = archives.prepare(source, Path(work), setup.archive_limits)
            except archives.Rejected as why:
                return _not_graded(student, source, digest, setup, f"rejected: {why}")
            try:
                recorded = judge.run(submission, setup.limits, setup.isolation, setup.preload)
            except judge.JudgeFailure as why:
                if "time limit" not in str(why):
                    raise
                return _not_graded(student, source, digest, setup, f"partial: {why}")
        return _results(student, source, digest, setup, _score(setup, recorded), "ok")
    except Exception as error:  # noqa: BLE001 - a grader bug must not stop the class
        traceback.print_exc()
        results = _not_graded(student, source, digest, setup,
                              f"error: the grader failed ({type(error).__name__}: {error}); it is retried next run")
        results["extra_data"]["grader_version"] = ""
        return results


# --------------------------------------------------------------------------- outputs


def _fence(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}\n{text.rstrip()}\n{ticks}"


def feedback(results: dict) -> str:
    """The student's feedback file: the total, each part, each test with its points and message."""
    extra = results["extra_data"]
    lines = [f"# Feedback for {extra['student_id']}", "",
             f"**Code: {results['score']:g} / {results['max_score']:g} points.** "
             "(The compression-rate ranking, 10 points, is graded separately.)", "",
             f"Submission: `{extra['submission']}`; status: {extra['status']}", ""]
    lines += resubmit.feedback_lines(extra)
    for part in PARTS:
        tests = [t for t in results["tests"] if t["tags"][0] == part]
        maximum = sum(t["max_score"] for t in tests)
        lines += [f"## {part}: {extra['parts'][part]:g} / {maximum:g}", ""]
        for test in tests:
            hidden = " (hidden on Gradescope)" if test["visibility"] == "hidden" else ""
            lines += [f"### {test['status']}: {test['name']}: {test['score']:g} / {test['max_score']:g}{hidden}", "",
                      f"TODO: {test['tags'][1]}", "", _fence(test["output"] or "(no message)"), ""]
    return "\n".join(lines)


def grade_rows(out: Path) -> List[dict]:
    """The rows of grades.csv, from every results file in ``out/results``."""
    rows = []
    for path in sorted((out / "results").glob("*.json")):
        try:
            extra = json.loads(path.read_text(encoding="utf-8"))["extra_data"]
        except (OSError, ValueError, KeyError):
            continue
        parts = extra["parts"]
        if not all(isinstance(parts.get(p), (int, float)) and math.isfinite(parts[p]) for p in PARTS):
            parts, extra["status"] = dict.fromkeys(PARTS, 0.0), f"error: {path.name} is damaged; grade again"
        rows.append({"student_id": extra["student_id"], **{p: f"{parts[p]:g}" for p in PARTS},
                     "code_total": f"{sum(parts.values()):g}", "status": extra["status"],
                     "isolation": extra.get("isolation", "")})
    return rows


def write_grades(out: Path) -> None:
    """Rebuild ``out/grades.csv`` from ``out/results`` (atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(grade_rows(out))
    write_atomic(out / "grades.csv", buffer.getvalue())


def save(out: Path, results: dict) -> None:
    """Write one student's results and feedback, then the grade file."""
    student = results["extra_data"]["student_id"]
    write_atomic(out / "feedback" / f"{student}.md", feedback(results))
    write_atomic(out / "results" / f"{student}.json", json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_grades(out)


def already_graded(out: Path, student: str, digest: str, version: str) -> bool:
    """True when ``out`` holds this student's results for the same file and grader version."""
    try:
        extra = json.loads((out / "results" / f"{student}.json").read_text(encoding="utf-8"))["extra_data"]
    except (OSError, ValueError, KeyError):
        return False
    return extra.get("sha256") == digest and extra.get("grader_version") == version \
        and (out / "feedback" / f"{student}.md").exists()


def _clean_temporaries(out: Path) -> None:
    for folder in (out, out / "results", out / "feedback"):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the command


def parse_args(argv: List[str]) -> argparse.Namespace:
    defaults = box.Limits()
    parser = argparse.ArgumentParser(prog="python -m grader grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="folder of <student_id>.rar/.zip/.tar.gz/... or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (grades.csv, feedback/, results/)")
    parser.add_argument("--jobs", type=int, default=1, help="students graded in parallel (default 1)")
    parser.add_argument("--only", action="append", metavar="ID", help="grade only this student (repeatable)")
    parser.add_argument("--force", action="store_true", help="grade again students already graded")
    parser.add_argument("--roster", type=Path, help="CSV id,name[,lms_id]: who gets 0 for no submission (docs/TA.md)")
    parser.add_argument("--test-timeout", type=float, default=defaults.test_timeout_s, help="seconds per test")
    parser.add_argument("--submission-timeout", type=float, default=defaults.submission_timeout_s,
                        help="seconds for one student in all")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                        help="memory the student's code may use beyond the preloaded libraries")
    parser.add_argument("--isolation", choices=("auto", *box.LEVELS), default="auto",
                        help="the student's box: auto (the strongest here, refusing to grade without a sandbox), "
                             "bwrap (bubblewrap), or basic (no sandbox: only for code you would run yourself)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--preload", help=argparse.SUPPRESS)  # modules the judge server imports, comma-separated
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    return args


def isolation_level(wanted: str, strongest: str, why: str) -> str:
    """The box level to grade at, given the strongest one here; raises ``RuntimeError`` rather than grade
    without a sandbox unasked."""
    if wanted == "basic":
        return "basic"
    if strongest == "basic":
        raise RuntimeError(f"no sandbox can be made here: {why}.\nInstall bubblewrap (Debian/Ubuntu: "
                           "apt-get install bubblewrap), or pass --isolation basic to grade without one "
                           "(the student's code can then read and write what you can: see docs/GRADING.md)")
    return strongest


_listed: Dict[str, Tuple[dict, ...]] = {}


def make_setup(args: argparse.Namespace) -> Setup:
    """The run's settings; starts the judge server and finds the isolation level (call it from the main thread)."""
    limits = box.Limits(test_timeout_s=args.test_timeout, memory_mb=args.memory_mb,
                        submission_timeout_s=args.submission_timeout)
    version = grader_version(limits, archives.Limits())
    if version not in _listed:
        _listed[version] = list_tests()
    preload = judge.DEFAULT_PRELOAD if args.preload is None else tuple(m for m in args.preload.split(",") if m)
    server = judge.server(preload)
    level = isolation_level(args.isolation, server.level, server.why_not_bwrap)
    return Setup(_listed[version], version, limits, isolation=level, preload=preload)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    out: Path = args.out
    for folder in ("results", "feedback"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    started = time.monotonic()
    try:
        students = roster.load(args.roster) if args.roster else None
        setup = make_setup(args)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    found, ignored = find_submissions(args.submissions)
    found, older = resubmit.latest(found)
    if students is not None:
        roster.record(students, found, out, setup, args.roster, args.submissions)
    if args.only:
        found = {sid: paths for sid, paths in found.items() if sid in set(map(safe_id, args.only))}
    print(f"{len(found)} submissions in {args.submissions}, {len(ignored)} other files skipped; "
          f"isolation: {box.describe(setup.isolation)}; grader version {setup.version}", file=sys.stderr)
    todo, skipped = {}, 0
    for sid, paths in found.items():
        if not args.force and already_graded(out, sid, submission_hash(paths), setup.version):
            skipped += 1
        else:
            todo[sid] = paths
    try:
        failed = _grade_all(todo, setup, out, args.jobs, skipped, not args.no_progress, older)
    except KeyboardInterrupt:
        print("\ninterrupted: what was graded is saved; run the same command again to go on", file=sys.stderr)
        return 130
    finally:
        judge.shutdown()
    write_grades(out)
    print(f"graded {len(todo)} submissions ({failed} not ok), {skipped} already graded, "
          f"in {time.monotonic() - started:.0f} s: {out / 'grades.csv'}")
    return 0


def _grade_all(todo: Dict[str, List[Path]], setup: Setup, out: Path, jobs: int, skipped: int, progress: bool,
               older: Dict[str, List[Path]] = {}) -> int:  # noqa: B006 - read only
    """Grade ``todo`` with ``jobs`` threads (each drives a judge process); return how many were not ok."""
    from tqdm import tqdm
    failed = done = 0
    bar = tqdm(total=len(todo) + skipped, initial=skipped, unit="student", desc="grading", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, sid, paths, setup): sid for sid, paths in sorted(todo.items())}
        try:
            for future in concurrent.futures.as_completed(futures):
                results = resubmit.annotate(future.result(), older.get(futures[future], []), out)
                save(out, results)
                status = results["extra_data"]["status"]
                done += 1
                if status != "ok":
                    failed += 1
                    bar.write(f"{futures[future]}: {results['score']:g} points, {status}", file=sys.stderr)
                bar.set_postfix(done=done + skipped - failed, failed=failed, left=len(todo) - done, refresh=False)
                bar.update()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            judge.stop_all()
            raise
    bar.close()
    return failed
