"""``python -m grader demo``: a whole grading session on a small class built from this repository.

    python -m grader demo [--data-dir D] [--out DIR] [--jobs N]

1. **A class of five.** The reference solutions, the untouched handout
   skeleton, and three realistic buggy variants (the solutions with one bug
   of ``grader/variants.py`` planted in them). Each student hands in
   ``<id>.zip`` (``net/`` and ``pruning.py``) and ``<id>.ptmodel``. Three of
   them also hand in Part 2 (``deploy/``): the reference's, the skeleton's
   stubs, and one with a Part 2 bug (``DEPLOY_BUGS``); the other two hand in
   Part 1 only, and their feedback says what Part 2 lacks.
2. **Short training runs.** One initial AlexNet is trained with the
   reference code (every student's initial training is the same code with
   the same seed, so it is done once); then each student's *own* code prunes
   it (per-layer percentiles, milder than the course's), retrains it briefly with its
   masking and shares its weights at 5 bits. The skeleton's weight sharing
   would run k-means on 16.7 million unpruned fc2 weights (about ten
   minutes here), so the skeleton hands in its retrained model instead,
   as a student who ran out of time would.
3. **Grading** with ``python -m grader grade``, then the **leaderboard**
   with the gate lowered to what such a short run reaches (the reference
   model's accuracy minus 5 points), printed as such.

It takes at most 10 minutes on 2 CPU cores. Without ``--data-dir`` it
downloads CIFAR-10 into ``data/`` (torchvision), or uses it if already there.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from grader import homework, variants

REPO = Path(__file__).resolve().parent.parent
HANDED_IN = tuple(sorted(set(homework.STUDENT_FILES) | {f for f in homework.PROVIDED_FILES if f.startswith("net/")}))
"""What a student zips: the handout's ``net/`` folder and ``pruning.py``."""
DEPLOY_HANDED_IN = homework.DEPLOY_STUDENT_FILES
"""What a student who does Part 2 adds to it."""
IGNORED = shutil.ignore_patterns("saves", "data", "encodings", "__pycache__", "tests", "log.txt")
TIME_BUDGET = "10 minutes on 2 CPU cores"
GATE_MARGIN = 5


@dataclass(frozen=True)
class Student:
    """One demo submission: where its code comes from and what it does wrong."""

    student_id: str
    description: str
    code: Path
    variant: Optional[str] = None
    shares_weights: bool = True
    deploy: bool = False
    """Hands in Part 2 (``deploy/``)."""
    deploy_variant: Optional[str] = None
    """A Part 2 bug planted in it (``grader.variants.DEPLOY_BUGS``)."""


@dataclass(frozen=True)
class Recipe:
    """How long the short training runs are."""

    train_images: int = 5000
    initial_epochs: int = 2
    initial_lr: float = 0.02
    retrain_images: int = 1000
    retrain_epochs: int = 1
    retrain_lr: float = 0.005
    prune_rates: Tuple[Tuple[str, float], ...] = (("conv1", 30.0), ("conv2", 60.0), ("conv3", 70.0),
                                                  ("conv4", 70.0), ("conv5", 70.0), ("fc1", 85.0), ("fc2", 95.0),
                                                  ("fc3", 50.0))
    """Percent of each layer's weights PRUNED (prune_by_percentile takes 100 minus these, the percent kept).
    Milder than the course's DEFAULT_LAYER_KEEP: a network trained for two short epochs does not survive
    99% pruning of fc2 (it falls to chance), while these keep most of its accuracy."""
    bits: int = 5
    seed: int = 0


CLASS_BUGS = ("prune_without_abs", "percentile_global", "kmeans_on_zeros")
DEPLOY_BUG = "kd_temperature_not_squared"
"""The Part 2 bug of the last buggy student (the others hand in Part 1 only)."""


def demo_class(solutions: Path = REPO / "solutions", skeleton: Path = REPO / "assignment",
               bugs: Sequence[str] = CLASS_BUGS, deploy_bug: str = DEPLOY_BUG) -> List[Student]:
    """The five students: the reference, the skeleton, and the solutions with each of ``bugs`` planted; the
    reference, the skeleton and the last of ``bugs`` (with ``deploy_bug`` too) hand in Part 2."""
    students = [Student("demo-reference", "the reference solutions, Part 2 included", solutions, deploy=True),
                Student("demo-skeleton", "the untouched handout skeleton, Part 2's stubs included (hands in its "
                                         "retrained model: its k-means on unpruned fc2 would take ~10 min)", skeleton,
                        shares_weights=False, deploy=True)]
    for bug in bugs:
        last = bug == bugs[-1]
        description = f"bug: {variants.bug(bug).description}" + (
            f"; Part 2 bug: {variants.bug(deploy_bug).description}" if last else "; no Part 2")
        students.append(Student(f"demo-{bug.replace('_', '-')}", description, solutions, bug, deploy=last,
                                deploy_variant=deploy_bug if last else None))
    return students


def make_workspace(student: Student, folder: Path) -> Path:
    """A copy of the student's code in ``folder``, with the student's bug planted in it."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(student.code, folder, ignore=IGNORED)
    for variant in (student.variant, student.deploy_variant):
        if variant:
            variants.apply(variant, folder, solutions=student.code)
    return folder


# Runs inside a student's workspace, with the student's `net` and `pruning` modules.
DRIVER = r'''
import json, sys
import torch
import util, pruning
from net.models import AlexNet
from net.quantization import apply_weight_sharing
a = json.loads(sys.argv[1])
cpu = torch.device("cpu")
generator = util.set_seed(a["seed"])
data = util.load_cifar10(a["data_dir"], train=True, download=False)
if a["initial"]:
    data, epochs, lr = data.subset(a["train_images"]), a["initial_epochs"], a["initial_lr"]
    model = AlexNet()
else:
    data, epochs, lr = data.subset(a["retrain_images"]), a["retrain_epochs"], a["retrain_lr"]
    model = util.load_model(a["start"])
    model.prune_by_percentile({layer: 100.0 - pruned for layer, pruned in a["prune_rates"]})  # q = percent kept
steps = -(-len(data) // 128)
optimizer, scheduler = pruning.make_optimizer(model, lr, epochs, steps, 5e-4)
pruning.train(model, data, optimizer, epochs, cpu, 128, scheduler, generator, progress=False)
if a["share"]:
    apply_weight_sharing(model, bits=a["bits"])
torch.save(model, a["output"])
'''


def run_driver(workspace: Path, data_dir: Path, output: Path, recipe: Recipe, start: Optional[Path] = None,
               share: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Train from scratch (``start`` None) or prune, retrain and share ``start``, with the workspace's code."""
    settings = {**recipe.__dict__, "data_dir": str(Path(data_dir).resolve()), "output": str(output.resolve()),
                "initial": start is None, "start": str(start.resolve()) if start else None, "share": share}
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    with open(workspace / "demo.log", "w") as log:
        return subprocess.run([sys.executable, "-c", DRIVER, json.dumps(settings)], cwd=workspace, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=timeout)


def package(workspace: Path, student_id: str, submissions: Path, deploy: bool = False) -> Path:
    """Write ``submissions/<id>.zip`` with the student's ``net/`` and ``pruning.py`` (and ``deploy/``)."""
    submissions.mkdir(parents=True, exist_ok=True)
    archive = submissions / f"{student_id}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for relative in HANDED_IN + (DEPLOY_HANDED_IN if deploy else ()):
            if (workspace / relative).is_file():
                zipped.write(workspace / relative, relative)
    return archive


def demo_gate(reference_accuracy: float) -> str:
    """The lowered gate: the reference model's accuracy minus ``GATE_MARGIN`` points, rounded down, at least 10."""
    return f"{max(10, math.floor(reference_accuracy) - GATE_MARGIN):.2f}"


def build_class(students: Sequence[Student], data_dir: Path, out: Path, recipe: Recipe,
                say: Callable[[str], None] = print) -> Path:
    """Train, prune, retrain and share every student's model; return the submissions folder."""
    work, submissions = out / "work", out / "submissions"
    submissions.mkdir(parents=True, exist_ok=True)
    initial = out / "initial_model.ptmodel"
    reference_space = make_workspace(students[0], work / students[0].student_id)
    if not initial.exists():
        say(f"training one initial AlexNet with the reference code ({recipe.initial_epochs} epochs on "
            f"{recipe.train_images} images)")
        done = run_driver(reference_space, data_dir, initial, recipe, share=False)
        if done.returncode:
            raise RuntimeError(f"the initial training failed; see {reference_space / 'demo.log'}")
    else:
        say(f"reusing the initial AlexNet of an earlier run: {initial} (delete it to train again)")
    for student in students:
        space = make_workspace(student, work / student.student_id)
        package(space, student.student_id, submissions, student.deploy)
        say(f"{student.student_id}: {student.description}")
        done = run_driver(space, data_dir, submissions / f"{student.student_id}.ptmodel", recipe, start=initial,
                          share=student.shares_weights)
        if done.returncode:
            say(f"  its scripts failed, so it hands in no model (see {space / 'demo.log'})")
    return submissions


def ensure_data(data_dir: Path) -> None:
    """Load CIFAR-10 once, which downloads it when it is missing; exit with the loader's advice on failure."""
    from grader.reference import reference
    util = reference().util
    try:
        util.load_cifar10(str(data_dir), train=True)
        util.load_cifar10(str(data_dir), train=False)
    except util.DataError as error:
        raise SystemExit(f"error: {error}")


def reference_accuracy(submissions: Path, out: Path, data_dir: Path, jobs: int) -> float:
    """Measure the class (cached for the leaderboard run) and return the reference model's accuracy (0 if none)."""
    from grader import leaderboard
    from grader.measure import CifarEvaluator, measure_key
    evaluator = CifarEvaluator(data_dir)
    found, _ = leaderboard.discover(submissions)
    results = leaderboard.measure_all(found, leaderboard.ResultCache(out / "cache", measure_key(evaluator)),
                                      evaluator, jobs=jobs)
    reference_result = results.get("demo-reference")
    return reference_result.entry().accuracy if reference_result is not None else 0.0


def summary(out: Path, students: Sequence[Student]) -> str:
    """One line per student: code points, accuracy, rate, ranking points, total, and Part 2's points."""
    import csv
    with open(out / "leaderboard" / "final_grades.csv", newline="") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f)}
    with open(out / "leaderboard" / "leaderboard.csv", newline="") as f:
        board = {row["student_id"]: row for row in csv.DictReader(f)}
    part2 = f"part 2 ({homework.DEPLOY_SCORING})"
    lines = [f"{'student':<28} {'code':>5} {'accuracy':>9} {'rate':>8} {'ranking':>7} {'total':>6} {part2:>18}"]
    for student in students:
        g, b = grades.get(student.student_id, {}), board.get(student.student_id, {})
        code = sum(float(g.get(part) or 0) for part in homework.PART_NAMES)
        deploy = f"{float(g.get(homework.DEPLOY_COLUMN) or 0):g}/{homework.DEPLOY_POINTS:g}" if student.deploy \
            else "not handed in"
        lines.append(f"{student.student_id:<28} {code:>5g} {b.get('accuracy') or '-':>9} "
                     f"{b.get('compression_rate') or '-':>8} {g.get('ranking', '0'):>7} {g.get('total', '-'):>6} "
                     f"{deploy:>18}")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grader demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=f"Build a class of five from this repository, grade it and publish its leaderboard "
                    f"(at most {TIME_BUDGET}).")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder holding cifar-10-batches-py/ (downloaded there when missing)")
    parser.add_argument("--out", type=Path, default=Path("demo"), help="folder for everything the demo writes")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded and measured in parallel")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[demo {time.monotonic() - started:5.0f} s] {text}", flush=True)

    print(f"This demo builds, grades and ranks a class of five submissions. It takes at most {TIME_BUDGET}.")
    ensure_data(args.data_dir)
    students = demo_class()
    submissions = build_class(students, args.data_dir, args.out, Recipe(), say)

    from grader import cli
    grading, board = args.out / "grading", args.out / "leaderboard"
    command = ["grade", str(submissions), "--out", str(grading), "--jobs", str(args.jobs)]
    say("grading the code: python -m grader " + " ".join(command))
    if cli.main(command) != 0:
        say("grading failed; the leaderboard goes on without code grades")

    say("measuring every model for the leaderboard")
    gate = demo_gate(reference_accuracy(submissions, board, args.data_dir, args.jobs))
    say(f"GATE LOWERED FOR THE DEMO: {gate}% (the reference model's accuracy after this short run, minus "
        f"{GATE_MARGIN} points; the homework's gate is {homework.GATE}%)")
    command = ["leaderboard", str(submissions), "--out", str(board), "--data-dir", str(args.data_dir),
               "--gate", gate, "--jobs", str(args.jobs)]
    if (grading / "grades.csv").is_file():
        command += ["--grades", str(grading / "grades.csv")]
    say("python -m grader " + " ".join(command))
    cli.main(command)
    if (board / "final_grades.csv").is_file():
        print("\n" + summary(args.out, students))
    say(f"done. Open the leaderboard page: {(board / 'leaderboard.html').resolve()}")
    return 0
