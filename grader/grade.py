"""Grade a whole class: ``python -m grader grade SUBMISSIONS_DIR --out OUT_DIR [--jobs N]``.

Every archive (``.rar``, ``.zip``, ``.tar``, ``.tar.gz``, ``.7z``...) or folder
in SUBMISSIONS_DIR is one student, whose id is the file name without its
suffix (``.ptmodel`` files, for the leaderboard, are skipped). Each is
unpacked safely (:mod:`grader.archives`), then the hidden suites run on it in
a sandbox (:mod:`grader.sandbox`). Results are written as they come:

``OUT_DIR/results/<id>.json``
    Gradescope's ``results.json`` format (score, max_score, tests with
    name/score/max_score/output/visibility), plus ``extra_data`` with the
    submission's hash and the grader version used for resuming.
``OUT_DIR/feedback/<id>.md``
    every test, its points and its message, for the student.
``OUT_DIR/grades.csv``
    ``student_id,prune,quantize,huffman,code_total,status``, rebuilt from
    ``results/`` after every student.

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
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from grader.files import write_atomic
from grader import archives, sandbox

REPO = Path(__file__).resolve().parent.parent
RUNNER = "grader.suites.runner"
PARTS = ("prune", "quantize", "huffman")
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
CSV_FIELDS = ["student_id", *PARTS, "code_total", "status"]


@dataclass(frozen=True)
class Setup:
    """Everything a grading run shares between students."""
    code: Path
    """Folder put on the runner's path: grader/suites and the reference solutions."""
    tests: Tuple[dict, ...]
    """The runner's ``--list``: name, part, todo, max_score of every test."""
    version: str
    limits: sandbox.Limits = sandbox.Limits()
    archive_limits: archives.Limits = archives.Limits()
    runner: str = RUNNER
    isolation: str = "auto"
    preload: Tuple[str, ...] = sandbox.DEFAULT_PRELOAD
    protect: Tuple[Path, ...] = ()


# --------------------------------------------------------------------------- set-up


def stage_code(dest: Path, repo: Path = REPO) -> Path:
    """Copy what the suites need (``grader/__init__.py``, ``grader/suites/``, ``solutions/``) into ``dest``."""
    from grader.assign import source_files
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    (dest / "grader").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(repo / "grader" / "__init__.py", dest / "grader" / "__init__.py")
    shutil.copytree(repo / "grader" / "suites", dest / "grader" / "suites", ignore=skip, dirs_exist_ok=True)
    for relative in source_files(repo / "solutions"):
        (dest / "solutions" / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / "solutions" / relative, dest / "solutions" / relative)
    return dest


def list_tests(code: Path, runner: str = RUNNER) -> Tuple[dict, ...]:
    """The runner's test list (it runs no student code)."""
    env = dict(os.environ, PYTHONPATH=str(code), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-m", runner, "--list"], cwd=code, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"`{runner} --list` failed:\n{done.stderr.strip()}")
    tests = tuple(json.loads(done.stdout))
    if not tests or any(t.get("part") not in PARTS for t in tests):
        raise RuntimeError(f"`{runner} --list` gave no tests or an unknown part")
    return tests


def grader_version(code: Path, limits: sandbox.Limits, archive_limits: archives.Limits, runner: str) -> str:
    """A hash of everything that decides a score: the staged suites and solutions, the runner and the limits."""
    digest = hashlib.sha256(json.dumps([runner, asdict(limits), asdict(archive_limits)], sort_keys=True).encode())
    for path in sorted(p for p in code.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(code).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
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
                           "isolation": setup.isolation}}


def _not_graded(student: str, source: Path, digest: str, setup: Setup, status: str) -> dict:
    """Results with 0 points everywhere, for a submission that could not be graded."""
    tests = [_entry(spec, 0.0, f"Not graded: {status}") for spec in setup.tests]
    return _results(student, source, digest, setup, tests, status)


def _score(setup: Setup, runs: Dict[str, sandbox.PartResult]) -> Tuple[List[dict], str]:
    """Match what the sandbox recorded with the test list; missing tests score 0 and say why."""
    scored, problems = [], []
    for part in PARTS:
        run = runs.get(part) or sandbox.PartResult(part, outcome="did not run")
        recorded = {t.get("name"): t for t in run.tests if t.get("part") == part}
        specs = [spec for spec in setup.tests if spec["part"] == part]
        missing = [spec for spec in specs if spec["name"] not in recorded]
        if run.outcome or missing:
            why = run.outcome or "ended before running all its tests"
            problems.append(f"{part}: the test process {why}")
        for spec in specs:
            got = recorded.get(spec["name"])
            if got is None:
                why = run.outcome or "ended before this test"
                scored.append(_entry(spec, 0.0, f"Not run: the test process {why}."))
                continue
            try:
                score = min(max(float(got.get("score", 0.0)), 0.0), float(spec["max_score"]))
            except (TypeError, ValueError):
                score = 0.0
            visibility = got.get("visibility") if got.get("visibility") in VISIBILITIES else "visible"
            scored.append(_entry(spec, score, str(got.get("output", "")), visibility))
    order = {spec["name"]: i for i, spec in enumerate(setup.tests)}
    scored.sort(key=lambda t: order[t["name"]])
    return scored, ("partial: " + "; ".join(problems)) if problems else "ok"


def grade_one(student: str, sources: Sequence[Path], setup: Setup) -> dict:
    """Grade one student's submission; always returns a results document, never raises."""
    source, digest = sources[0], submission_hash(sources)
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources)
        return _not_graded(student, source, digest, setup, f"error: several submissions for this id ({names})")
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as work:
            try:
                submission = archives.prepare(source, Path(work), setup.archive_limits)
            except archives.Rejected as why:
                return _not_graded(student, source, digest, setup, f"rejected: {why}")
            expected = {part: sum(spec["part"] == part for spec in setup.tests) for part in PARTS}
            runs = sandbox.run_submission(submission, setup.code, PARTS, runner=setup.runner, limits=setup.limits,
                                          level=setup.isolation, preload=setup.preload, protect=setup.protect,
                                          expected=expected)
        tests, status = _score(setup, runs)
        return _results(student, source, digest, setup, tests, status)
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
        rows.append({"student_id": extra["student_id"], **{p: f"{parts[p]:g}" for p in PARTS},
                     "code_total": f"{sum(parts.values()):g}", "status": extra["status"]})
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
    defaults = sandbox.Limits()
    parser = argparse.ArgumentParser(prog="python -m grader grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="folder of <student_id>.rar/.zip/.tar.gz/... or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (grades.csv, feedback/, results/)")
    parser.add_argument("--jobs", type=int, default=1, help="students graded in parallel (default 1)")
    parser.add_argument("--only", action="append", metavar="ID", help="grade only this student (repeatable)")
    parser.add_argument("--force", action="store_true", help="grade again students already graded")
    parser.add_argument("--test-timeout", type=float, default=defaults.test_timeout_s, help="seconds per test")
    parser.add_argument("--part-timeout", type=float, default=defaults.part_timeout_s,
                        help="seconds for all the tests of one part")
    parser.add_argument("--submission-timeout", type=float, default=None,
                        help="seconds for one student in all (default: 3 parts + 2 minutes)")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                        help="memory a part may allocate beyond the preloaded libraries")
    parser.add_argument("--isolation", choices=("auto", "namespaces", "basic"), default="auto",
                        help="sandbox: Linux namespaces (read-only system, no network) or basic limits only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--runner", default=RUNNER, help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)  # a folder holding --runner (tests)
    parser.add_argument("--preload", help=argparse.SUPPRESS)  # modules the sandbox server imports, comma-separated
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    return args


_listed: Dict[str, Tuple[dict, ...]] = {}


def make_setup(args: argparse.Namespace, code: Path) -> Setup:
    """The run's settings; starts the sandbox server and finds the isolation level (call it from the main thread)."""
    limits = sandbox.Limits(test_timeout_s=args.test_timeout, part_timeout_s=args.part_timeout,
                            memory_mb=args.memory_mb,
                            submission_timeout_s=args.submission_timeout or 3 * args.part_timeout + 120)
    version = grader_version(code, limits, archives.Limits(), args.runner)
    if version not in _listed:
        _listed[version] = list_tests(code, args.runner)
    preload = sandbox.DEFAULT_PRELOAD if args.preload is None else tuple(m for m in args.preload.split(",") if m)
    protect = tuple(p.resolve() for p in (REPO, args.out, args.submissions))
    return Setup(code, _listed[version], version, limits, runner=args.runner,
                 isolation=sandbox.isolation(args.isolation, preload), preload=preload, protect=protect)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    out: Path = args.out
    for folder in ("results", "feedback"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _clean_temporaries(out)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grader-code-") as staged:
        code = args.code.resolve() if args.code else stage_code(Path(staged))
        try:
            setup = make_setup(args, code)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        found, ignored = find_submissions(args.submissions)
        if args.only:
            found = {sid: paths for sid, paths in found.items() if sid in set(map(safe_id, args.only))}
        print(f"{len(found)} submissions in {args.submissions}, {len(ignored)} other files skipped; "
              f"sandbox: {setup.isolation}; grader version {setup.version}", file=sys.stderr)
        todo, skipped = {}, 0
        for sid, paths in found.items():
            if not args.force and already_graded(out, sid, submission_hash(paths), setup.version):
                skipped += 1
            else:
                todo[sid] = paths
        try:
            failed = _grade_all(todo, setup, out, args.jobs, skipped, not args.no_progress)
        except KeyboardInterrupt:
            print("\ninterrupted: what was graded is saved; run the same command again to go on", file=sys.stderr)
            return 130
        finally:
            sandbox.shutdown()
    write_grades(out)
    print(f"graded {len(todo)} submissions ({failed} not ok), {skipped} already graded, "
          f"in {time.monotonic() - started:.0f} s: {out / 'grades.csv'}")
    return 0


def _grade_all(todo: Dict[str, List[Path]], setup: Setup, out: Path, jobs: int, skipped: int, progress: bool) -> int:
    """Grade ``todo`` with ``jobs`` threads (each drives a sandbox process); return how many were not ok."""
    from tqdm import tqdm
    failed = done = 0
    bar = tqdm(total=len(todo) + skipped, initial=skipped, unit="student", desc="grading", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, sid, paths, setup): sid for sid, paths in sorted(todo.items())}
        try:
            for future in concurrent.futures.as_completed(futures):
                results = future.result()
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
            sandbox.stop_all()
            raise
    bar.close()
    return failed
