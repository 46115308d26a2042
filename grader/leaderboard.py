"""``python -m grader leaderboard``: measure every submitted model and publish the compression ranking.

    python -m grader leaderboard SUBMISSIONS_DIR --out OUT_DIR [--data-dir D] [--grades GRADES_CSV]
                                 [--gate PERCENT] [--jobs N] [--timeout S]

For every ``<student_id>.ptmodel`` in SUBMISSIONS_DIR: load it safely, encode
it with the reference Huffman coder, decode it, check the round trip, and
measure its accuracy on the whole CIFAR-10 test set (``grader.measure``).
Then gate, rank and tier (``grader.ranking``) and write the outputs
(``grader.publish``). Each result is cached in ``OUT_DIR/cache/`` under the
file's SHA-256, a hash of the measuring code and the evaluation settings, so a
rerun measures only new or changed files, and a run killed midway keeps
everything it finished. See docs/LEADERBOARD.md.
"""
import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from grader import resubmit
from grader.files import write_atomic
from grader import homework
from grader.ranking import original_bytes

if TYPE_CHECKING:
    from grader import measure

SUFFIX = homework.MODEL_SUFFIX
DEFAULT_TIMEOUT = homework.LEADERBOARD_TIMEOUT_S
DEFAULT_JOBS = min(4, os.cpu_count() or 1)
"""One single-threaded worker per core (up to 4, about 1.5 GB each) beats fewer multi-threaded ones here."""


@dataclass(frozen=True)
class Submission:
    """A file to measure and what its cached result is keyed by."""

    student_id: str
    path: Path
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discover(folder: Path) -> Tuple[List[Submission], Dict[str, str]]:
    """The ``*.ptmodel`` files of ``folder``, and the problem of each file that cannot be a submission.

    Problems are keyed by a printable version of the name. Nothing is read from a file that is not a
    regular file (a symlink, a FIFO) or is over the size limit.
    """
    from grader.safeload import MAX_FILE_BYTES
    submissions: Dict[str, Submission] = {}
    rejected: Dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == SUFFIX):
        student_id = homework.student_id(path.stem)
        if path.is_symlink() or not path.is_file():
            rejected[student_id] = f"invalid: {student_id}{SUFFIX} must be a regular file"
        elif student_id in submissions or student_id in rejected:
            submissions.pop(student_id, None)
            rejected[student_id] = "invalid: more than one .ptmodel for this student"
        elif path.stat().st_size > MAX_FILE_BYTES:
            rejected[student_id] = (f"invalid: the file is {path.stat().st_size:,} bytes; the homework's model in "
                                    f"float32 is {original_bytes():,}")
        else:
            submissions[student_id] = Submission(student_id, path, file_sha256(path))
    return list(submissions.values()), rejected


class ResultCache:
    """One JSON file per student in ``folder``; a result counts only for the same file hash and key."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder, self.key = folder, key
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, student_id: str) -> Path:
        return self.folder / f"{student_id}.json"

    def get(self, submission: Submission):
        from grader.measure import Measurement
        try:
            data = json.loads(self._path(submission.student_id).read_text())
        except (OSError, ValueError):
            return None
        if data.get("sha256") != submission.sha256 or data.get("key") != self.key:
            return None
        return Measurement.from_dict(data["measurement"])

    def put(self, submission: Submission, measurement) -> None:
        record = {"sha256": submission.sha256, "key": self.key, "measurement": measurement.to_dict()}
        write_atomic(self._path(submission.student_id), json.dumps(record, indent=1))


def _setup_worker(evaluator, threads: int):
    """Runs once in each measuring process (the parent already printed any data warning)."""
    import torch
    from grader.reference import reference
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    reference()
    with contextlib.redirect_stderr(io.StringIO()):
        evaluator.prepare()
    return evaluator


def _measure_task(submission: Submission, evaluator):
    from grader.measure import measure
    return measure(submission.path, submission.student_id, evaluator)


def measure_all(submissions: Sequence[Submission], cache: ResultCache, evaluator, jobs: int = 1,
                timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Dict[str, "measure.Measurement"]:
    """Measure every submission not already in ``cache``; return all results by id.

    ``jobs`` worker processes measure in parallel, each model within ``timeout`` seconds; ``jobs=0``
    measures in this process instead (no timeout: for debugging and tests).
    """
    from tqdm import tqdm

    from grader.measure import Measurement
    from grader.workerpool import Failure, run_tasks

    results = {s.student_id: cached for s in submissions if (cached := cache.get(s)) is not None}
    todo = [s for s in submissions if s.student_id not in results]
    bar = tqdm(total=len(submissions), initial=len(results), desc="measuring", unit="model", disable=not progress)

    def on_result(submission: Submission, outcome) -> None:
        if isinstance(outcome, Failure):  # not cached: a crash or a timeout may not happen again
            outcome = Measurement(submission.student_id, problem=f"error: {outcome.reason}")
        else:
            cache.put(submission, outcome)
        results[submission.student_id] = outcome
        bar.update(1)
        bar.set_postfix_str(f"{submission.student_id}: {outcome.problem or f'{outcome.entry().accuracy:.2f}%'}"[:60])

    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    try:
        if jobs == 0:  # in this process: no timeout, no isolation (debugging, tests)
            for submission in todo:
                try:
                    outcome = _measure_task(submission, evaluator)
                except Exception as error:
                    outcome = Failure(f"{type(error).__name__}: {error}")
                on_result(submission, outcome)
        else:
            run_tasks(todo, _setup_worker, (evaluator, threads), _measure_task, on_result, jobs=jobs,
                      timeout=timeout)
    finally:
        bar.close()
    return results


def read_grades(path: Path) -> Dict[str, Dict[str, str]]:
    """The grader's ``grades.csv`` (student_id,prune,quantize,huffman,code_total,status) by student id."""
    with open(path, newline="") as f:
        return {row["student_id"].strip(): row for row in csv.DictReader(f) if row.get("student_id", "").strip()}


def run(submissions_dir: Path, out_dir: Path, evaluator, gate: str = homework.GATE, grades: Optional[Path] = None,
        jobs: int = 1, timeout: float = DEFAULT_TIMEOUT, progress: bool = True, pseudonyms: bool = False,
        pseudonym_key: Optional[Path] = None) -> List:
    """Measure, rank and publish; return the leaderboard rows. ``evaluator`` is the accuracy seam."""
    from grader import publish
    from grader.measure import measure_key
    from grader.ranking import Entry, rank_entries

    submissions, rejected = discover(submissions_dir)
    submissions, rejected = resubmit.latest_models(submissions, rejected)  # alice__2.ptmodel replaces alice.ptmodel (docs/TA.md)
    grade_rows = read_grades(grades) if grades else {}
    results = measure_all(submissions, ResultCache(out_dir / "cache", measure_key(evaluator)), evaluator,
                          jobs=jobs, timeout=timeout, progress=progress)
    entries = [measurement.entry() for measurement in results.values()]
    entries += [Entry(name, problem=problem) for name, problem in rejected.items()]
    entries += [Entry(student_id, problem="missing: no .ptmodel submitted")
                for student_id in grade_rows if student_id not in results]
    rows = rank_entries(entries, gate)
    publish.write_all(out_dir, rows, results, gate, grade_rows if grades else None)
    if pseudonyms:  # the ranking once more under pseudonyms, in out_dir/public (grader/pseudonyms.py)
        from grader.pseudonyms import publish as publish_pseudonymous
        publish_pseudonymous(out_dir, rows, gate, pseudonym_key)
    return rows


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader leaderboard", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Measure every <student_id>.ptmodel safely, rank by compression rate, publish.")
    parser.add_argument("submissions", type=Path, help="folder holding the <student_id>.ptmodel files")
    parser.add_argument("--out", type=Path, required=True, help="folder for the leaderboard and its cache")
    parser.add_argument("--data-dir", default="data", help="folder that holds (or will hold) cifar-10-batches-py/")
    parser.add_argument("--grades", type=Path, help="the grader's grades.csv, to write final_grades.csv")
    parser.add_argument("--gate", default=homework.GATE, help="accuracy (percent) a model must be strictly above")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help="models measured in parallel, each in its own process (0: in this process)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per model")
    parser.add_argument("--test-images", type=int, default=None, metavar="N",
                        help="evaluate on the first N test images only (a quick look, not for grading)")
    parser.add_argument("--pseudonyms", action="store_true",
                        help="also write public/ (the ranking under stable pseudonyms) and private/pseudonyms.csv")
    parser.add_argument("--pseudonym-key", type=Path, help="the course's pseudonym key (created when absent; "
                        "default OUT/private/pseudonym.key)")
    args = parser.parse_args(argv)
    try:
        float(args.gate)
    except ValueError:
        parser.error(f"--gate must be a number, got {args.gate!r}")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    if args.grades and not args.grades.is_file():
        parser.error(f"{args.grades} does not exist")

    from grader.pseudonyms import PseudonymError, key_file, load_or_create_key
    try:
        if args.pseudonyms:  # a bad key stops the run before anything is measured
            load_or_create_key(key_file(args.out, args.pseudonym_key))
    except (PseudonymError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from grader.measure import CifarEvaluator
    from grader.reference import reference
    util = reference().util
    try:
        util.load_cifar10(args.data_dir, train=False)  # downloads it if it is missing and we are online
    except util.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = run(args.submissions, args.out, CifarEvaluator(args.data_dir, args.test_images), args.gate,
               args.grades, max(0, args.jobs), args.timeout, pseudonyms=args.pseudonyms,
               pseudonym_key=args.pseudonym_key)
    ranked = sum(row.qualified for row in rows)
    print(f"{len(rows)} students, {ranked} ranked (accuracy above {args.gate}%), "
          f"{sum(row.entry.problem != '' for row in rows)} without a usable model")
    print(f"leaderboard: {(args.out / 'leaderboard.html').resolve()}")
    return 0
