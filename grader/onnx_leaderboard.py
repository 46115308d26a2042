"""``python -m grader onnx-leaderboard``: the second leaderboard, for deployable models (``<student_id>.onnx``).

    python -m grader onnx-leaderboard SUBMISSIONS_DIR --out OUT_DIR [--data-dir D] [--gate PERCENT]
                                      [--jobs N] [--timeout S] [--latency-rounds R] [--reference FILE]

For every ``<student_id>.onnx`` in SUBMISSIONS_DIR: check it with the
``onnx`` library (``grader.onnxload``), count its bit-operations from the
graph (``grader.bitops``), measure its accuracy on the CIFAR-10 test set and
its latency against the dense reference AlexNet in ONNX Runtime at 1 thread
(``grader.onnx_measure``). Models strictly above ``homework.ONNX_GATE`` are
ranked by bit-operations, fewest first; latency is shown, never ranked by.
Everything else is Part 1's machinery (``grader.leaderboard``): the cache by
file hash, the worker pool, ``--shard K/N`` and ``python -m grader merge``,
pseudonyms, and the pages of ``grader.publish`` with this board's
:data:`LAYOUT`. See docs/LEADERBOARD.md.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from grader import homework, resubmit, shards, uno
from grader.leaderboard import (DEFAULT_TIMEOUT, Board, ResultCache, add_board_arguments, check_board_arguments,
                                discover, measure_all, print_outcome, publish_class, ready_to_measure)
from grader.publish import BELOW_GATE_COLOUR, Column, Layout
from grader.ranking import Row

KIND = "onnx-leaderboard"
BOARD = Board(KIND, homework.ONNX_SUFFIX, "grader.onnx_measure:OnnxMeasurement", "grader.onnx_leaderboard:LAYOUT")
CSV_COLUMNS = ["rank", "student_id", "accuracy", "bit_ops", "macs", "latency_ratio", "fits_uno", "qualified",
               "status"]
RANKED_COLOUR = "#1a9850"
REFERENCE_SEED = 0
"""Seed of the dense reference AlexNet exported for the latency ratio (its weights do not change its speed)."""


# --------------------------------------------------------------------------- the pages


def cells(row: Row) -> dict:
    """The CSV fields of one row, as text (empty where there is nothing to say)."""
    entry, measured = row.entry, not row.entry.problem
    return {"rank": "" if row.rank is None else str(row.rank),
            "student_id": entry.student_id,
            "accuracy": f"{entry.accuracy:.2f}" if measured else "",
            "bit_ops": str(entry.bit_ops) if measured else "",
            "macs": str(entry.macs) if measured else "",
            "latency_ratio": f"{entry.latency_ratio:.2f}" if measured and entry.latency_ratio is not None else "",
            "fits_uno": entry.fits_uno,
            "qualified": "yes" if row.qualified else "no",
            "status": row.status}


def _giga(text: str) -> str:
    return f"{int(text) / 1e9:,.3f}" if text else ""


def _mega(text: str) -> str:
    return f"{int(text) / 1e6:,.2f}" if text else ""


def _times(text: str) -> str:
    return f"{text}×" if text else ""


RULE = ("Models whose accuracy is strictly above the gate are ranked by bit-operations of one image, fewest first: "
        "the sum over the multiplying nodes of MACs × weight bits × activation bits, read from the graph (equal "
        "counts share a rank). Latency is the median of interleaved timings of one image at 1 thread in ONNX "
        "Runtime, against the dense float32 reference AlexNet: shown, not ranked by. \"fits UNO\" comes from the "
        "student's microcontroller header, measured with avr-gcc, avr-size and simavr.")


def headline(rows: Sequence[Row], gate: str) -> str:
    """The sentence under the title: gate, test set, how many ranked."""
    images = max((r.entry.total for r in rows), default=0)
    test_set = f"the {images:,} CIFAR-10 test images" if images else "the CIFAR-10 test images"
    return f"Gate: accuracy above {gate}% on {test_set}. {sum(r.qualified for r in rows)} of {len(rows)} " \
           "students ranked by bit-operations."


def details(row: Row, n_ranked: int, measurement=None, gate: str = "") -> str:
    """The per-student text file: the numbers, the verdict and the per-node cost table."""
    entry = row.entry
    lines = [f"student: {entry.student_id}", f"status: {row.status}"]
    if not entry.problem:
        latency = "not measured" if entry.latency_ratio is None else f"{entry.latency_ratio:.2f}x the reference"
        lines += [f"accuracy: {entry.accuracy:.2f}% ({entry.correct}/{entry.total} test images; the gate is above "
                  f"{gate}%)", f"bit-operations of one image: {entry.bit_ops:,} ({entry.macs:,} MACs)",
                  f"latency (median, 1 thread, interleaved): {latency}"]
    lines.append(f"fits UNO: {entry.fits_uno}")
    if row.rank is not None:
        lines.append(f"rank: {row.rank} of {n_ranked} ranked")
    if measurement is not None and getattr(measurement, "table", ""):
        lines += ["", "Where the bit-operations are (batch 1; shapes from onnx.shape_inference):", "",
                  measurement.table]
    return "\n".join(lines) + "\n"


LAYOUT = Layout(
    title="Deployable-model leaderboard (bit-operations)", csv_columns=CSV_COLUMNS, cells=cells,
    ranked=(Column("rank", lambda c: c["rank"]), Column("student", lambda c: c["student_id"], "id"),
            Column("accuracy (%)", lambda c: c["accuracy"]),
            Column("bit-ops (10⁹)", lambda c: _giga(c["bit_ops"])),
            Column("MACs (10⁶)", lambda c: _mega(c["macs"])),
            Column("latency vs reference", lambda c: _times(c["latency_ratio"])),
            Column("fits UNO", lambda c: c["fits_uno"], "")),
    others=(Column("student", lambda c: c["student_id"], "id"), Column("accuracy (%)", lambda c: c["accuracy"]),
            Column("bit-ops (10⁹)", lambda c: _giga(c["bit_ops"])), Column("reason", lambda c: c["status"], "")),
    rule=RULE, headline=headline, details=details, row_class=lambda row: "in",
    groups=lambda: [("ranked", lambda r: r.qualified, RANKED_COLOUR),
                    ("below the gate", lambda r: not r.qualified, BELOW_GATE_COLOUR)],
    x=lambda row: row.entry.bit_ops, x_label="bit-operations of one image (log scale)",
    plot_title="Accuracy against bit-operations", empty_xlim=(1e6, 1e12), others_title="Not ranked")
"""How this board's CSV, Markdown, HTML page, plot and details look (``grader.publish`` writes them)."""


# --------------------------------------------------------------------------- measuring


def _setup_worker(bench, threads: int):
    """Runs once in each measuring process: the test set and the reference session (ONNX Runtime at 1 thread)."""
    bench.prepare()
    return bench


def _measure_task(submission, bench):
    from grader.onnx_measure import measure
    return measure(submission.path, submission.student_id, bench)


def reference_model(folder: Path) -> Path:
    """The dense reference AlexNet as ONNX (``solutions/deploy``'s export, seed ``REFERENCE_SEED``), exported once
    into ``folder`` and reused while the reference code and torch are unchanged."""
    import hashlib
    import tempfile

    import torch

    from grader.reference import PACKAGE, SOLUTIONS, load, module, reference, source_digest
    exporter = SOLUTIONS / "deploy" / "onnx_int8.py"
    digest = hashlib.sha256(f"{source_digest()}:{torch.__version__}:{REFERENCE_SEED}".encode()
                            + exporter.read_bytes()).hexdigest()[:16]
    path = Path(folder) / f"reference-{digest}.onnx"
    Path(folder).mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        from grader.files import write_atomic
        torch.manual_seed(REFERENCE_SEED)
        model = reference().AlexNet()
        export = module(load(SOLUTIONS, PACKAGE), "deploy/onnx_int8.py").export_onnx
        with tempfile.TemporaryDirectory(dir=folder) as scratch:  # the exporter wants a name ending in .onnx
            written = export(model, torch.zeros(1, *homework.ONNX_INPUT), Path(scratch) / "reference.onnx")
            write_atomic(path, Path(written).read_bytes())
    return path


def run(submissions_dir: Path, out_dir: Path, evaluator, gate: str = homework.ONNX_GATE, jobs: int = 1,
        timeout: float = DEFAULT_TIMEOUT, progress: bool = True, pseudonyms: bool = False,
        pseudonym_key: Optional[Path] = None, shard: Optional[shards.Shard] = None,
        reference: Optional[Path] = None, rounds: int = homework.ONNX_LATENCY_ROUNDS) -> List[Row]:
    """Measure, rank and publish; return the rows (none with ``shard``: ``merge`` ranks). ``evaluator`` is the
    accuracy seam (``OnnxCifarEvaluator``); ``reference`` the dense model for latency (exported when None and
    ``rounds`` is not 0)."""
    from grader.onnx_measure import Bench, OnnxMeasurement, measure_key

    out_dir.mkdir(parents=True, exist_ok=True)
    if reference is None and rounds:
        reference = reference_model(out_dir / "cache")
    shards.start(out_dir, shard)
    found, rejected = discover(submissions_dir, shard, homework.ONNX_SUFFIX, homework.ONNX_MAX_BYTES,
                               lambda size: f"invalid: the file is {size:,} bytes (limit {homework.ONNX_MAX_BYTES:,})")
    found, rejected = resubmit.latest_models(found, rejected)
    bench = Bench(evaluator, reference, rounds)
    cache = ResultCache(out_dir / "cache", measure_key(bench), OnnxMeasurement)
    results = measure_all(found, cache, bench, jobs=jobs, timeout=timeout, progress=progress,
                          setup=_setup_worker, task=_measure_task, kind=OnnxMeasurement)
    done = {sid: {"rejected": problem} for sid, problem in rejected.items()}
    for submission in found:  # a failure (crash, timeout) is not cached: it is tried again next run
        if cache.get(submission) is None:
            done[submission.student_id] = {"failed": results[submission.student_id].problem}
        else:
            done[submission.student_id] = {"sha256": submission.sha256,
                                           "extra": {"fits_uno": uno.fits_uno(submission.path, out_dir / "cache")}}
    settings = {"gate": str(gate), "pseudonyms": pseudonyms,
                "pseudonym_key": str(Path(pseudonym_key).resolve()) if pseudonym_key else None}
    shards.finish(out_dir, KIND, shard, cache.key, settings, done)
    return [] if shard else publish_class(out_dir, BOARD)


def merge(out_dir: Path) -> str:
    """``python -m grader merge`` for an ONNX leaderboard folder: rank and publish; a line saying what was done."""
    rows = publish_class(out_dir, BOARD)
    return f"{len(rows)} students, {sum(row.qualified for row in rows)} ranked: " \
           f"{(out_dir / 'leaderboard.html').resolve()}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader onnx-leaderboard", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Check every <student_id>.onnx safely, rank by bit-operations above the gate, publish.")
    add_board_arguments(parser, ".onnx", homework.ONNX_GATE)
    parser.add_argument("--out", type=Path, required=True, help="folder for this leaderboard and its cache "
                        "(not the --out of the compression leaderboard)")
    parser.add_argument("--latency-rounds", type=int, default=homework.ONNX_LATENCY_ROUNDS,
                        help="interleaved timing rounds against the reference (0: no latency column)")
    parser.add_argument("--reference", type=Path, help="the dense reference .onnx for the latency ratio "
                        "(default: the reference AlexNet, exported once into OUT/cache)")
    args = parser.parse_args(argv)
    shard = check_board_arguments(parser, args)
    if args.latency_rounds < 0:
        parser.error("--latency-rounds must be 0 or more")
    if args.reference and not args.reference.is_file():
        parser.error(f"{args.reference} does not exist")
    if not ready_to_measure(args):
        return 2
    from grader.onnx_measure import OnnxCifarEvaluator
    from grader.safeload import SubmissionError
    try:
        rows = run(args.submissions, args.out, OnnxCifarEvaluator(args.data_dir, args.test_images), args.gate,
                   max(0, args.jobs), args.timeout, pseudonyms=args.pseudonyms, pseudonym_key=args.pseudonym_key,
                   shard=shard, reference=args.reference, rounds=args.latency_rounds)
    except shards.ShardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SubmissionError as error:  # only the --reference file can raise here
        print(f"error: the reference model cannot be used: {error}", file=sys.stderr)
        return 2
    print_outcome(args, rows, shard)
    return 0
