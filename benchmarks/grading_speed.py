"""How fast does ``python -m grader grade`` get through a class? (A benchmark, not a test.)

    python benchmarks/grading_speed.py [--copies 12] [--jobs 1 2]

Grades ``--copies`` zips of the reference solutions plus the untouched
skeleton, once per ``--jobs`` value, each time into a fresh output folder,
with the real hidden suites and the default limits. Also times a run over an
empty folder (the fixed cost: listing the tests, starting the sandbox server),
so that it can print submissions per minute, CPU seconds per submission, and
the projected time for a class of 150: from the wall time measured (which
other work on the machine slows down) and from the CPU time (what the run
would take with the machine's CPUs to itself: the fixed cost, then the
submissions spread over min(jobs, CPUs) cores).
"""
import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parent.parent


def pack(source: Path, target: Path) -> None:
    """Zip ``source``'s net/ and pruning.py as a student would."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(source / "pruning.py", "pruning.py")
        for path in sorted((source / "net").glob("*.py")):
            zf.write(path, f"net/{path.name}")


def timed_grade(folder: Path, out: Path, jobs: int) -> Tuple[float, float]:
    """Wall seconds and CPU seconds (all processes) of one grading run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "grader", "grade", str(folder), "--out", str(out), "--jobs", str(jobs),
                    "--no-progress"], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def check(out: Path, copies: int) -> str:
    with open(out / "grades.csv", newline="") as f:
        totals = {row["student_id"]: float(row["code_total"]) for row in csv.DictReader(f)}
    expected = {**{f"sol{i:03d}": 90.0 for i in range(copies)}, "skeleton": 0.0}
    return "scores as expected" if totals == expected else f"UNEXPECTED SCORES: {totals}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=12, help="copies of the solutions (plus one skeleton)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        tmp_path = Path(tmp)
        folder, empty = tmp_path / "class", tmp_path / "empty"
        folder.mkdir()
        empty.mkdir()
        for i in range(args.copies):
            pack(REPO / "solutions", folder / f"sol{i:03d}.zip")
        pack(REPO / "assignment", folder / "skeleton.zip")
        n = args.copies + 1
        fixed, fixed_cpu = timed_grade(empty, tmp_path / "out-empty", 1)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
              f"fixed cost of a run: {fixed:.1f} s wall, {fixed_cpu:.1f} s CPU")
        print(f"{'jobs':>4}  {'submissions':>11}  {'wall s':>7}  {'per minute':>10}  {'CPU s/sub':>9}  "
              f"{'150 (wall)':>10}  {'150 (CPU)':>9}  check")
        for jobs in args.jobs:
            out = tmp_path / f"out-{jobs}"
            wall, cpu = timed_grade(folder, out, jobs)
            per_submission = max(wall - fixed, 1e-9) / n
            cpu_per_submission = (cpu - fixed_cpu) / n
            projected = fixed + 150 * per_submission
            idle = fixed_cpu + 150 * cpu_per_submission / min(jobs, os.cpu_count() or 1)
            print(f"{jobs:>4}  {n:>11}  {wall:>7.1f}  {60 * n / wall:>10.1f}  {cpu_per_submission:>9.2f}  "
                  f"{projected / 60:>6.1f} min  {idle / 60:>5.1f} min  {check(out, args.copies)}")
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
