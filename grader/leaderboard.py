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
everything it finished. With ``--shard K/N`` only shard K's students are
measured and nothing is ranked; ``python -m grader merge OUT_DIR`` ranks and
publishes once every shard is done, as a run without ``--shard`` does at its
end (``grader.shards``). See docs/LEADERBOARD.md and docs/SCALE.md.
"""
import argparse
import contextlib
import csv
import hashlib
import importlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from grader import resubmit, shards
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


def discover(folder: Path, shard: Optional[shards.Shard] = None, suffix: str = SUFFIX,
             max_bytes: Optional[int] = None, too_big: Optional[Callable[[int], str]] = None,
             ) -> Tuple[List[Submission], Dict[str, str]]:
    """The ``*<suffix>`` files of ``folder`` (of the students of ``shard`` only, when given), and the problem of
    each file that cannot be a submission.

    Problems are keyed by a printable version of the name. Nothing is read from a file that is not a
    regular file (a symlink, a FIFO) or is over ``max_bytes`` (``too_big(size)`` says why), nor from another
    shard's files. The defaults are Part 1's: ``.ptmodel`` files and the safe loader's limit.
    """
    if max_bytes is None:
        from grader.safeload import MAX_FILE_BYTES as max_bytes
    if too_big is None:
        too_big = lambda size: (f"invalid: the file is {size:,} bytes; the homework's model in "  # noqa: E731
                                f"float32 is {original_bytes():,}")
    submissions: Dict[str, Submission] = {}
    rejected: Dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix):
        student_id = homework.student_id(path.stem)
        if not shards.belongs(resubmit.split(student_id)[0], shard):
            continue
        if path.is_symlink() or not path.is_file():
            rejected[student_id] = f"invalid: {student_id}{suffix} must be a regular file"
        elif student_id in submissions or student_id in rejected:
            submissions.pop(student_id, None)
            rejected[student_id] = f"invalid: more than one {suffix} for this student"
        elif path.stat().st_size > max_bytes:
            rejected[student_id] = too_big(path.stat().st_size)
        else:
            submissions[student_id] = Submission(student_id, path, file_sha256(path))
    return list(submissions.values()), rejected


class ResultCache:
    """One JSON file per student in ``folder``; a result counts only for the same file hash and key.

    ``kind`` is the measurement class (with ``to_dict``/``from_dict``): Part 1's ``grader.measure.Measurement``
    by default."""

    def __init__(self, folder: Path, key: str, kind: Optional[type] = None) -> None:
        self.folder, self.key, self.kind = folder, key, kind
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, student_id: str) -> Path:
        return self.folder / f"{student_id}.json"

    def get(self, submission: Submission):
        if self.kind is None:
            from grader.measure import Measurement
            self.kind = Measurement
        try:
            data = json.loads(self._path(submission.student_id).read_text())
        except (OSError, ValueError):
            return None
        if data.get("sha256") != submission.sha256 or data.get("key") != self.key:
            return None
        return self.kind.from_dict(data["measurement"])

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
                timeout: float = DEFAULT_TIMEOUT, progress: bool = True, setup: Optional[Callable] = None,
                task: Optional[Callable] = None, kind: Optional[type] = None) -> Dict[str, "measure.Measurement"]:
    """Measure every submission not already in ``cache``; return all results by id.

    ``jobs`` worker processes measure in parallel, each model within ``timeout`` seconds; ``jobs=0``
    measures in this process instead (no timeout: for debugging and tests). ``setup(evaluator, threads)``
    runs once per worker and ``task(submission, state)`` measures one file; ``kind`` is the measurement
    class a failure is reported as. The defaults are Part 1's (whose ``jobs=0`` runs no set-up).
    """
    from tqdm import tqdm

    from grader.workerpool import Failure, run_tasks

    if kind is None:
        from grader.measure import Measurement as kind
    own_setup, setup, task = setup, setup or _setup_worker, task or _measure_task
    results = {s.student_id: cached for s in submissions if (cached := cache.get(s)) is not None}
    todo = [s for s in submissions if s.student_id not in results]
    bar = tqdm(total=len(submissions), initial=len(results), desc="measuring", unit="model", disable=not progress)

    def on_result(submission: Submission, outcome) -> None:
        if isinstance(outcome, Failure):  # not cached: a crash or a timeout may not happen again
            outcome = kind(submission.student_id, problem=f"error: {outcome.reason}")
        else:
            cache.put(submission, outcome)
        results[submission.student_id] = outcome
        bar.update(1)
        bar.set_postfix_str(f"{submission.student_id}: {outcome.problem or f'{outcome.entry().accuracy:.2f}%'}"[:60])

    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    try:
        if jobs == 0:  # in this process: no timeout, no isolation (debugging, tests)
            state = own_setup(evaluator, threads) if own_setup else evaluator  # Part 1 needs no set-up here
            for submission in todo:
                try:
                    outcome = task(submission, state)
                except Exception as error:
                    outcome = Failure(f"{type(error).__name__}: {error}")
                on_result(submission, outcome)
        else:
            run_tasks(todo, setup, (evaluator, threads), task, on_result, jobs=jobs, timeout=timeout)
    finally:
        bar.close()
    return results


def read_grades(path: Path) -> Dict[str, Dict[str, str]]:
    """The grader's ``grades.csv`` (student_id,prune,quantize,huffman,code_total,status) by student id."""
    with open(path, newline="") as f:
        return {row["student_id"].strip(): row for row in csv.DictReader(f) if row.get("student_id", "").strip()}


def run(submissions_dir: Path, out_dir: Path, evaluator, gate: str = homework.GATE, grades: Optional[Path] = None,
        jobs: int = 1, timeout: float = DEFAULT_TIMEOUT, progress: bool = True, pseudonyms: bool = False,
        pseudonym_key: Optional[Path] = None, shard: Optional[shards.Shard] = None) -> List:
    """Measure, rank and publish; return the leaderboard rows. ``evaluator`` is the accuracy seam. With
    ``shard=(K, N)``, measure shard K's students only, record them and return no rows (:func:`merge` ranks)."""
    from grader.measure import measure_key

    shards.start(out_dir, shard)
    submissions, rejected = discover(submissions_dir, shard)
    submissions, rejected = resubmit.latest_models(submissions, rejected)  # alice__2.ptmodel replaces alice.ptmodel (docs/TA.md)
    cache = ResultCache(out_dir / "cache", measure_key(evaluator))
    results = measure_all(submissions, cache, evaluator, jobs=jobs, timeout=timeout, progress=progress)
    done = {sid: {"rejected": problem} for sid, problem in rejected.items()}
    for submission in submissions:  # a failure (crash, timeout) is not cached: it is tried again next run
        measured = cache.get(submission) is not None
        done[submission.student_id] = {"sha256": submission.sha256} if measured else \
            {"failed": results[submission.student_id].problem}
    settings = {"gate": str(gate), "grades": str(Path(grades).resolve()) if grades else None,
                "pseudonyms": pseudonyms, "pseudonym_key": str(Path(pseudonym_key).resolve()) if pseudonym_key else None}
    shards.finish(out_dir, "leaderboard", shard, cache.key, settings, done)
    return [] if shard else publish_class(out_dir)


@dataclass(frozen=True)
class Board:
    """What tells one leaderboard from the other when ranking and publishing (the steps are shared)."""

    kind: str
    """Its kind of shard marker (``grader/shards.py``)."""
    suffix: str
    measurement: str
    """``module:Class`` of its measurements (imported when used)."""
    layout: str
    """``module:NAME`` of its ``grader.publish.Layout``."""

    def load(self, name: str):
        module, attribute = getattr(self, name).split(":")
        return getattr(importlib.import_module(module), attribute)


COMPRESSION = Board("leaderboard", SUFFIX, "grader.measure:Measurement", "grader.publish:COMPRESSION")
"""Part 1's leaderboard."""


def publish_class(out_dir: Path, board: Board = COMPRESSION) -> List:
    """Rank the whole class from every shard's measurements in ``out_dir`` and write every published file;
    return the rows. ``ShardError`` when the shards do not fit together (:func:`grader.shards.collect`).
    A student's ``extra`` facts in a shard's record (the ONNX board's ``fits_uno``) go to ``entry()``."""
    from grader import publish
    from grader.ranking import rank_entries

    kind = board.load("measurement")
    done = shards.collect(out_dir, board.kind)
    settings = done.settings
    cache = ResultCache(out_dir / "cache", done.version, kind)
    results, entries = {}, []
    for sid, facts in sorted(done.students.items()):
        if "sha256" in facts:
            results[sid] = cache.get(Submission(sid, Path(sid), facts["sha256"]))
            if results[sid] is None:
                raise shards.ShardError(f"cannot merge {out_dir}: cache/{sid}.json does not hold the measurement "
                                        f"shard {shards.shard_of(sid, done.n)}/{done.n} recorded.\n"
                                        "Run that shard again with the same command.")
        elif "failed" in facts:
            results[sid] = kind(sid, problem=str(facts["failed"]))
        else:
            results[sid] = kind(sid, problem=str(facts["rejected"]))
    try:
        grade_rows = read_grades(Path(settings["grades"])) if settings.get("grades") else {}
    except (OSError, KeyError, ValueError) as error:
        raise shards.ShardError(f"cannot merge {out_dir}: the grades file {settings['grades']} the shards were "
                                f"given cannot be read ({error}).\nPut it back, or run the shards again with "
                                "another --grades.") from None
    entries += [measurement.entry(**done.students[sid].get("extra", {})) for sid, measurement in results.items()]
    entries += [kind(student_id, problem=f"missing: no {board.suffix} submitted").entry()
                for student_id in grade_rows if student_id not in done.students]
    rows = rank_entries(entries, settings["gate"])
    measured = {sid: m for sid, m in results.items() if "rejected" not in done.students[sid]}
    layout = board.load("layout")
    publish.write_all(out_dir, rows, measured, settings["gate"], grade_rows if settings.get("grades") else None,
                      layout)
    if settings["pseudonyms"]:  # the ranking once more under pseudonyms, in out_dir/public (grader/pseudonyms.py)
        from grader.pseudonyms import publish as publish_pseudonymous
        key = settings["pseudonym_key"]
        publish_pseudonymous(out_dir, rows, settings["gate"], Path(key) if key else None, layout)
    return rows


def merge(out_dir: Path) -> str:
    """``python -m grader merge`` for a leaderboard folder: rank and publish; a line saying what was done."""
    rows = publish_class(out_dir)
    return f"{len(rows)} students, {sum(row.qualified for row in rows)} ranked: " \
           f"{(out_dir / 'leaderboard.html').resolve()}"


def add_board_arguments(parser: argparse.ArgumentParser, suffix: str, gate: str) -> None:
    """The options every leaderboard command shares (``leaderboard``, ``onnx-leaderboard``)."""
    parser.add_argument("submissions", type=Path, help=f"folder holding the <student_id>{suffix} files")
    parser.add_argument("--data-dir", default="data", help="folder that holds (or will hold) cifar-10-batches-py/")
    parser.add_argument("--gate", default=gate, help="accuracy (percent) a model must be strictly above")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help="models measured in parallel, each in its own process (0: in this process)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per model")
    parser.add_argument("--test-images", type=int, default=None, metavar="N",
                        help="evaluate on the first N test images only (a quick look, not for grading)")
    parser.add_argument("--pseudonyms", action="store_true",
                        help="also write public/ (the ranking under stable pseudonyms) and private/pseudonyms.csv")
    parser.add_argument("--pseudonym-key", type=Path, help="the course's pseudonym key (created when absent; "
                        "default OUT/private/pseudonym.key)")
    shards.add_option(parser)


def check_board_arguments(parser: argparse.ArgumentParser, args) -> Optional[shards.Shard]:
    """Refuse bad shared options through ``parser`` (exit 2); return the shard, if one was asked for."""
    try:
        shard = shards.parse(args.shard) if args.shard is not None else None
    except shards.ShardError as error:
        parser.error(str(error))
    try:
        float(args.gate)
    except ValueError:
        parser.error(f"--gate must be a number, got {args.gate!r}")
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    return shard


def ready_to_measure(args) -> bool:
    """Check the pseudonym key and the test set before anything is measured; say what is wrong if not."""
    from grader.pseudonyms import PseudonymError, key_file, load_or_create_key
    from grader.reference import reference
    util = reference().util
    try:
        if args.pseudonyms:
            load_or_create_key(key_file(args.out, args.pseudonym_key))
        util.load_cifar10(args.data_dir, train=False)  # downloads it if it is missing and we are online
    except (PseudonymError, OSError, util.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def print_outcome(args, rows: Sequence, shard: Optional[shards.Shard]) -> None:
    """The command's last lines: what a shard did, or how many were ranked and where the page is."""
    if shard:
        print(f"shard {shards.name(shard)} measured; `python -m grader merge {args.out}` once every shard is")
        return
    print(f"{len(rows)} students, {sum(row.qualified for row in rows)} ranked (accuracy above {args.gate}%), "
          f"{sum(row.entry.problem != '' for row in rows)} without a usable model")
    print(f"leaderboard: {(args.out / 'leaderboard.html').resolve()}")


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader leaderboard", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Measure every <student_id>.ptmodel safely, rank by compression rate, publish.")
    add_board_arguments(parser, ".ptmodel", homework.GATE)
    parser.add_argument("--out", type=Path, required=True, help="folder for the leaderboard and its cache")
    parser.add_argument("--grades", type=Path, help="the grader's grades.csv, to write final_grades.csv")
    args = parser.parse_args(argv)
    shard = check_board_arguments(parser, args)
    if args.grades and not args.grades.is_file():
        parser.error(f"{args.grades} does not exist")
    if not ready_to_measure(args):
        return 2
    from grader.measure import CifarEvaluator
    try:
        rows = run(args.submissions, args.out, CifarEvaluator(args.data_dir, args.test_images), args.gate,
                   args.grades, max(0, args.jobs), args.timeout, pseudonyms=args.pseudonyms,
                   pseudonym_key=args.pseudonym_key, shard=shard)
    except shards.ShardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_outcome(args, rows, shard)
    return 0
