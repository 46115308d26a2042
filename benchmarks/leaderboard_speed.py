"""Time and memory of the leaderboard for one submission. (A benchmark, not a test.)

    python benchmarks/leaderboard_speed.py [--data-dir data] [--threads N] [--repeat 2]

Builds a reference-like submission (a freshly initialised AlexNet pruned with
the course's per-layer rates, ``DEFAULT_LAYER_KEEP``, and shared at 5 bits;
accuracy does not matter for timing), saves it whole as a student's script
would, then measures it in a fresh process set up exactly like a leaderboard
worker: safe load, reference Huffman encode and decode, round-trip check,
and accuracy on the 10,000 CIFAR-10 test images. Prints, per measurement,
the wall time, the CPU time (what it costs with the cores to itself: the wall
time on free cores is at most this) and the stages, then the process's peak
memory, against the goals of 15 s and 2 GB on 2 CPU cores.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS, GOAL_BYTES = 15.0, 2 * 2 ** 30


def build_submission(path: Path) -> None:
    """Prune a fresh AlexNet per layer and share it at 5 bits, with the reference code; save it whole."""
    sys.path.insert(0, str(REPO / "solutions"))
    import torch
    from net.models import AlexNet
    from net.quantization import apply_weight_sharing
    from pruning import DEFAULT_LAYER_KEEP
    import contextlib, io
    torch.manual_seed(0)
    model = AlexNet()
    with contextlib.redirect_stdout(io.StringIO()):
        model.prune_by_percentile(DEFAULT_LAYER_KEEP)
        apply_weight_sharing(model, bits=5)
    torch.save(model, path)


def child(path: Path, data_dir: str, threads: int, repeat: int) -> None:
    """Set up like a leaderboard worker, measure ``repeat`` times, print one JSON line."""
    started = time.perf_counter()
    sys.path.insert(0, str(REPO))
    from grader.leaderboard import _setup_worker
    from grader.measure import (CifarEvaluator, canonical_zeros, blank_alexnet, encode_decode, measure)
    from grader.safeload import load_state_dict
    evaluator = _setup_worker(CifarEvaluator(data_dir), threads)
    report = {"setup_s": time.perf_counter() - started, "runs": []}
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = measure(path, "benchmark", evaluator)
        run = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
               "problem": result.problem, "compressed_bytes": result.compressed_bytes,
               "accuracy": result.entry().accuracy}
        # the stages again, one by one, for the breakdown
        t = time.perf_counter()
        model = blank_alexnet()
        tensors = load_state_dict(path, {n: p.shape for n, p in model.state_dict().items()})
        model.load_state_dict({n: canonical_zeros(p) for n, p in tensors.items()}, assign=True)
        run["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        decoded, _ = encode_decode(model)
        run["encode_decode_s"] = time.perf_counter() - t
        t = time.perf_counter()
        evaluator(decoded, "benchmark")
        run["evaluate_s"] = time.perf_counter() - t
        report["runs"].append(run)
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    sys.path.insert(0, str(REPO))
    from grader.leaderboard import DEFAULT_JOBS
    default_threads = max(1, (os.cpu_count() or 1) // DEFAULT_JOBS)
    parser.add_argument("--threads", type=int, default=default_threads,
                        help="torch threads per worker (the leaderboard's default: CPUs / --jobs, --jobs = CPUs up to 4)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data_dir, args.threads, args.repeat)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "123456789.ptmodel"
        print("building a reference-like submission (per-layer pruning, 5-bit sharing)...", flush=True)
        build_submission(path)
        output = subprocess.run([sys.executable, __file__, "--child", str(path), "--data-dir", args.data_dir,
                                 "--threads", str(args.threads), "--repeat", str(args.repeat)],
                                capture_output=True, text=True)
    if output.returncode:
        print(output.stderr[-3000:], file=sys.stderr)
        return 1
    report = json.loads(output.stdout.strip().splitlines()[-1])
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"torch threads {args.threads}")
    print(f"worker set-up (imports, test set): {report['setup_s']:.1f} s, once per worker")
    for i, run in enumerate(report["runs"], 1):
        verdict = "ok" if run["cpu_s"] <= GOAL_SECONDS or run["wall_s"] <= GOAL_SECONDS else "OVER"
        print(f"submission, run {i}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU "
              f"(load {run['load_s']:.1f} s, encode+decode {run['encode_decode_s']:.1f} s, "
              f"10,000-image evaluation {run['evaluate_s']:.1f} s) -> goal {GOAL_SECONDS:.0f} s: {verdict}"
              f"{'; ' + run['problem'] if run['problem'] else ''}")
    peak = report["peak_rss_bytes"]
    print(f"peak memory of the measuring process: {peak / 2 ** 30:.2f} GB -> goal 2 GB: "
          f"{'ok' if peak <= GOAL_BYTES else 'OVER'}")
    print(f"compressed {report['runs'][0]['compressed_bytes']:,} bytes "
          f"({81_378_600 / report['runs'][0]['compressed_bytes']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
