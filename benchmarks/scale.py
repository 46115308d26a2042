"""Project the wall time of a class of 5,000 on N cores from per-student costs measured here.

    python benchmarks/scale.py [--students 5000] [--cores 1,8,64,256]

Measured on this machine, one core per shard (``--jobs 1``, one torch thread):

* grading: the time to list the tests (once per shard process), then
  ``grade.grade`` on 1 and on 4 submissions (solutions twice, the skeleton, a
  buggy variant), each in the real box; the per-student cost is the
  difference over the 3 extra students, the rest is the shard's fixed cost
  (wall time, and CPU time of this process and its finished children);
* the leaderboard: ``measure.measure`` of a reference-like model (the one of
  ``benchmarks/leaderboard_speed.py``: per-layer pruning, 5-bit sharing), 3
  times, on a test set of 10,000 images in the official layout (synthetic
  pixels: the work does not depend on their values), after loading the set
  once; wall and CPU time;
* the merges: ``grade.merge`` and ``leaderboard.publish_class`` over 5,000
  synthetic students in 64 shards (results and cached measurements copied
  from the real ones above, under new ids).

The projection for N cores is the fixed cost plus the largest shard's
students (sha256 of the ids ``student00000``... mod N: shards are not exactly
equal) times the per-student cost, then the merge. It assumes a shared
filesystem that keeps up and no queueing.
"""
import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grader import grade, judge, leaderboard, shards, variants  # noqa: E402
from grader.measure import CifarEvaluator, measure  # noqa: E402


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def cpu_seconds() -> float:
    """CPU time of this process and of every finished child (the judge and its boxes, once shut down)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def grading_costs(work: Path):
    from tests.test_archives import make_zip
    from tests.test_grade import student_files
    solutions, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    variant = {**solutions, **{f: t.encode() for f, t in variants.variant_files(variants.names()[0]).items()}}
    one, four = work / "one", work / "four"
    for folder, members in ((one, {"a": solutions}), (four, {"a": solutions, "b": solutions, "c": skeleton,
                                                             "d": variant})):
        folder.mkdir()
        for sid, files in members.items():
            make_zip(folder / f"{sid}.zip", files)
    listing, _ = timed(grade.list_tests)
    grade.grade(one, work / "warm", jobs=1)  # starts and lists once in this process, as a shard does
    cpu = cpu_seconds()
    t1, _ = timed(grade.grade, one, work / "out1", jobs=1)
    cpu1, cpu = cpu_seconds() - cpu, cpu_seconds()
    t4, _ = timed(grade.grade, four, work / "out4", jobs=1)
    cpu4 = cpu_seconds() - cpu
    per_student = (t4 - t1) / 3
    return listing + t1 - per_student, per_student, (cpu4 - cpu1) / 3, work / "out4"


def leaderboard_costs(work: Path):
    import importlib.util

    import torch
    from tests.tinycifar import write_tiny_cifar
    spec = importlib.util.spec_from_file_location("leaderboard_speed", REPO / "benchmarks" / "leaderboard_speed.py")
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    torch.set_num_threads(1)
    data = write_tiny_cifar(work / "data", n_train=10, n_test=10_000)
    evaluator = CifarEvaluator(data)
    prepare, _ = timed(evaluator.prepare)
    path = work / "model.ptmodel"
    speed.build_submission(path)
    walls, cpus, results = [], [], []
    for seed in range(3):
        cpu = time.process_time()
        seconds, result = timed(measure, path, f"m{seed}", evaluator)
        assert not result.problem, result.problem
        walls.append(seconds)
        cpus.append(time.process_time() - cpu)
        results.append(result)
    return prepare, sum(walls) / 3, sum(cpus) / 3, results, evaluator


def merge_costs(work: Path, graded: Path, measured, evaluator, students: int, n: int = 64):
    from grader.measure import measure_key
    ids = [f"student{i:05d}" for i in range(students)]
    template = json.loads((graded / "results" / "a.json").read_text())
    out = work / "merge-grade"
    (out / "results").mkdir(parents=True)
    for sid in ids:
        template["extra_data"]["student_id"] = sid
        (out / "results" / f"{sid}.json").write_text(json.dumps(template, indent=1))
    version = template["extra_data"]["grader_version"]
    for k in range(n):
        shards.finish(out, "grade", (k, n), version, {"isolation": template["extra_data"]["isolation"],
                                                        "roster": None},
                      {sid: {"sha256": template["extra_data"]["sha256"]} for sid in ids if shards.shard_of(sid, n) == k})
    grade_merge, _ = timed(grade.merge, out)
    board = work / "merge-board"
    cache = leaderboard.ResultCache(board / "cache", measure_key(evaluator))
    for i, sid in enumerate(ids):
        like = measured[i % len(measured)]  # distinct sizes: distinct rates
        cache.put(leaderboard.Submission(sid, Path(sid), f"{i:064x}"),
                  replace(like, student_id=sid, compressed_bytes=like.compressed_bytes + i))
    settings = {"gate": "0", "grades": None, "pseudonyms": False, "pseudonym_key": None}
    for k in range(n):
        shards.finish(board, "leaderboard", (k, n), cache.key, settings,
                      {sid: {"sha256": f"{i:064x}"} for i, sid in enumerate(ids) if shards.shard_of(sid, n) == k})
    board_merge, _ = timed(leaderboard.publish_class, board)
    return grade_merge, board_merge


def clock(seconds: float) -> str:
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=5000)
    parser.add_argument("--cores", default="1,8,64,256")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        grade_fixed, per_student, cpu_per_student, graded = grading_costs(work)
        print(f"grading: {grade_fixed:.1f} s per shard (listing the tests, starting the judge), "
              f"{per_student:.2f} s per student ({cpu_per_student:.2f} s of CPU)", flush=True)
        board_fixed, per_model, cpu_per_model, measured, evaluator = leaderboard_costs(work)
        print(f"leaderboard: {board_fixed:.1f} s per shard (loading 10,000 test images), "
              f"{per_model:.2f} s per model ({cpu_per_model:.2f} s of CPU)", flush=True)
        grade_merge, board_merge = merge_costs(work, graded, measured, evaluator, args.students)
        print(f"merge of {args.students:,} students: grades {grade_merge:.1f} s, leaderboard {board_merge:.1f} s")
        print(f"\nprojected wall time for {args.students:,} students (h:mm:ss; largest shard's students x cost "
              "+ fixed + merge; from the wall times measured here, and from the CPU times, as on free cores)")
        print("| cores (shards) | largest shard | grading | grading (CPU) | leaderboard | leaderboard (CPU) |")
        print("|---:|---:|---:|---:|---:|---:|")
        ids = [f"student{i:05d}" for i in range(args.students)]
        for n in (int(c) for c in args.cores.split(",")):
            sizes = [0] * n
            for sid in ids:
                sizes[shards.shard_of(sid, n)] += 1
            largest = max(sizes)
            print(f"| {n} | {largest} (mean {math.ceil(args.students / n)}) "
                  f"| {clock(grade_fixed + largest * per_student + grade_merge)} "
                  f"| {clock(grade_fixed + largest * cpu_per_student + grade_merge)} "
                  f"| {clock(board_fixed + largest * per_model + board_merge)} "
                  f"| {clock(board_fixed + largest * cpu_per_model + board_merge)} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        judge.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
