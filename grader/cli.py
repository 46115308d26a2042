"""One command line for every TA job: ``python -m grader <verb> [options]``.

Each verb lives in its own module, imported only when used, so that a verb's
heavy dependencies never slow down the others.
"""
import importlib
import sys
from typing import List, Optional

VERBS = {
    "assign": ("grader.assign", "generate assignment/ from solutions/ (or --check that it is in sync)"),
    "leaderboard": ("grader.leaderboard", "measure every <student_id>.ptmodel safely, rank by compression rate, publish"),
    "onnx-leaderboard": ("grader.onnx_leaderboard",
                         "check every <student_id>.onnx safely, rank by bit-operations above its gate, publish"),
    "demo": ("grader.demo", "build a small class from this repository, grade it and show its leaderboard (<10 min)"),
    "grade": ("grader.grade", "grade a folder of student submissions: grades.csv, feedback/, results/"),
    "merge": ("grader.shards", "join the shards of a class graded or ranked with --shard K/N (docs/SCALE.md)"),
    "gradescope": ("grader.gradescope", "build the Gradescope autograder bundle (autograder.zip)"),
    "sensitivity": ("grader.sensitivity", "per-layer prune and bit-width scans of a model, with accuracy and bytes"),
    "export": ("grader.export", "write the final grades for a course site: plain CSV, Canvas or Moodle import"),
    "summary": ("grader.summary", "an instructor's summary of a graded class (Markdown and self-contained HTML)"),
    "similarity": ("grader.similarity", "flag identical models and near-identical code across students, for a human"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: python -m grader <verb> [options]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {summary}" for verb, (_, summary) in VERBS.items()]
    lines.append("\n`python -m grader <verb> --help` describes a verb's options.")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return module.main(rest)
