"""Flag possible copying for a human to look at: ``python -m grader similarity SUBMISSIONS --out REPORT_DIR``.

Two checks, neither of which changes a grade:

* **Models.** ``<id>.ptmodel`` files with the same SHA-256, and files that
  differ as bytes but decode to the same weights (same names, dtypes, shapes
  and values; ``-0.0`` counts as ``0.0``). Files are read with the
  leaderboard's safe loader (:mod:`grader.safeload`: no code from the file
  runs).
* **Code.** Every student's Python files are unpacked with the grader's safe
  extraction (:mod:`grader.archives`; hostile archives are refused and
  listed), every line that also appears in the handout (``assignment/``,
  compared without surrounding spaces) is removed, so the skeleton itself never
  looks copied, and what is left is compared file by file (``prune.py`` with
  ``prune.py``...) by copydetect (PyPI ``copydetect``: tokenised, with
  variable names abstracted, winnowed fingerprints, as MOSS does; the
  handout is also passed as its boilerplate).

Outputs in REPORT_DIR: ``similarity.md`` and ``similarity.csv`` (the flagged
pairs), ``code-report.html`` (copydetect's report, the matching code
highlighted side by side), and ``code/<id>/`` (each student's files with the
handout lines removed, as compared). Only the newest version of a resubmitted
student is compared (see :mod:`grader.resubmit`).
"""
import argparse
import csv
import hashlib
import io
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from grader.files import write_atomic

REPO = Path(__file__).resolve().parent.parent
DEFAULT_THRESHOLD = 0.5
"""The share of a file's (handout-free) tokens found in the other student's file that flags the pair."""
MIN_OVERLAP = 40
"""Pairs sharing fewer tokens than this are not flagged, however high the share (a two-line file)."""


class SimilarityError(ValueError):
    """The check cannot run; the message says what to do."""


# --------------------------------------------------------------------------- models


def weights_digest(path: Path) -> str:
    """A hash of the decoded tensors of a ``.ptmodel`` (read safely); raises safeload.SubmissionError."""
    import torch

    from grader.safeload import SubmissionError, read_tensors
    digest = hashlib.sha256()
    tensors = read_tensors(path)
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise SubmissionError(f"{name} is not a plain tensor")
        values = tensor.detach().cpu().contiguous()
        if values.is_floating_point():
            values = values + 0.0  # -0.0 becomes 0.0: the same weight
        digest.update(f"{name}\0{values.dtype}\0{tuple(values.shape)}\0".encode())
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds every value exactly
            values = values.float()
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ModelCheck:
    """Groups of students whose models are the same."""

    same_file: List[List[str]] = field(default_factory=list)
    same_weights: List[List[str]] = field(default_factory=list)
    """Groups with the same decoded weights that are not all one file."""
    unreadable: Dict[str, str] = field(default_factory=dict)
    checked: int = 0


def check_models(folder: Path) -> ModelCheck:
    """Compare every ``<id>.ptmodel`` in ``folder`` by file hash and by decoded weights."""
    from grader.leaderboard import discover
    from grader.safeload import SubmissionError
    from grader.resubmit import latest_models
    submissions, rejected = discover(folder)
    submissions, rejected = latest_models(submissions, rejected)
    result = ModelCheck(unreadable=dict(rejected), checked=len(submissions))
    by_file: Dict[str, List[str]] = defaultdict(list)
    by_weights: Dict[str, List[str]] = defaultdict(list)
    file_of: Dict[str, str] = {}
    for submission in submissions:
        by_file[submission.sha256].append(submission.student_id)
        file_of[submission.student_id] = submission.sha256
        try:
            by_weights[weights_digest(submission.path)].append(submission.student_id)
        except SubmissionError as error:
            result.unreadable[submission.student_id] = str(error)
    result.same_file = sorted(sorted(group) for group in by_file.values() if len(group) > 1)
    result.same_weights = sorted(sorted(group) for group in by_weights.values()
                                 if len(group) > 1 and len({file_of[s] for s in group}) > 1)
    return result


# --------------------------------------------------------------------------- code


def handout_lines(skeleton: Path) -> Set[str]:
    """Every non-blank line of the handout's Python files, without surrounding spaces."""
    lines: Set[str] = set()
    for path in sorted(skeleton.rglob("*.py")):
        lines.update(line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines())
    lines.discard("")
    return lines


def strip_handout(text: str, handout: Set[str]) -> str:
    """``text`` without the lines the handout has (blank lines are kept, so the rest keeps its shape)."""
    kept = [line for line in text.splitlines() if line.strip() not in handout]
    return "\n".join(kept).strip("\n") + "\n" if any(line.strip() for line in kept) else ""


def unpack_code(source: Path, work: Path) -> Path:
    """The Python files of one submission, safely extracted into ``work``; raises archives.Rejected.

    Laid out as the grader stages them (``net/*.py``, ``pruning.py``) when it can find them, so that files
    are compared whatever folders each student packed them in; else as they were packed.
    """
    from grader import archives
    unpacked = archives.extract(source, work / "unpacked")
    if not any(unpacked.rglob("*.py")) and source.is_dir():
        inner = [p for p in source.iterdir() if archives.archive_suffix(p) and p.is_file() and not p.is_symlink()]
        if len(inner) == 1:  # a folder holding the uploaded archive, as Gradescope stores it
            unpacked = archives.extract(inner[0], work / "unpacked-inner")
    try:
        return archives.stage(archives.locate(unpacked), work / "staged")
    except archives.Rejected:
        return unpacked


def collect_code(submissions: Path, code_dir: Path, handout: Set[str]) -> Tuple[List[str], Dict[str, str]]:
    """Write every student's handout-free files under ``code_dir/<id>/``; return the ids with code, and the
    problems (refused archives, several files for one id) by id."""
    from grader import archives
    from grader.grade import find_submissions
    from grader.resubmit import latest
    found, _ = find_submissions(submissions)
    found, _ = latest(found)
    with_code, problems = [], {}
    for sid, sources in sorted(found.items()):
        if len(sources) > 1:
            problems[sid] = "several submissions with the same id and version: " + ", ".join(s.name for s in sources)
            continue
        with tempfile.TemporaryDirectory(prefix="similarity-") as work:
            try:
                unpacked = unpack_code(sources[0], Path(work))
            except archives.Rejected as why:
                problems[sid] = f"not unpacked: {why}"
                continue
            written = 0
            for path in sorted(unpacked.rglob("*.py")):
                relative = path.relative_to(unpacked)
                if archives.is_junk(relative.parts) or not path.is_file() or path.is_symlink():
                    continue
                text = strip_handout(path.read_text(encoding="utf-8", errors="replace"), handout)
                if text:
                    write_atomic(code_dir / sid / relative, text)
                    written += 1
        if written:
            with_code.append(sid)
    return with_code, problems


@dataclass(frozen=True)
class CodeMatch:
    """Two students' files with the same name that share code beyond the handout."""

    students: Tuple[str, str]
    file: str
    similarity: Tuple[float, float]
    """Share of the first file's tokens found in the second, and the other way round."""
    overlap: int
    """Tokens in common."""


def _owner(path: str, code_dir: Path) -> Tuple[str, str]:
    relative = Path(path).resolve().relative_to(code_dir.resolve())
    return relative.parts[0], Path(*relative.parts[1:]).as_posix()


def compare_code(code_dir: Path, skeleton: Path, report: Path, threshold: float) -> List[CodeMatch]:
    """Run copydetect over ``code_dir`` (files compared with files of the same name), write its HTML report to
    ``report``, and return the pairs of different students above ``threshold``."""
    import contextlib
    import logging

    import matplotlib
    matplotlib.use("Agg")
    from copydetect import CopyDetector
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        logging.getLogger().setLevel(logging.ERROR)
        detector = CopyDetector(test_dirs=[str(code_dir)], ref_dirs=[str(code_dir)],
                                boilerplate_dirs=[str(skeleton)], extensions=["py"], same_name_only=True,
                                display_t=threshold, autoopen=False, silent=True, out_file=str(report))
        detector.run()
        if len(detector.similarity_matrix):
            detector.generate_html_report()
    matches: Dict[Tuple[Tuple[str, str], str], CodeMatch] = {}
    for i, test_file in enumerate(detector.test_files):
        for j, ref_file in enumerate(detector.ref_files):
            if not len(detector.similarity_matrix):
                break
            first, second = detector.similarity_matrix[i, j]
            overlap = int(detector.token_overlap_matrix[i, j])
            (a, name), (b, _) = _owner(test_file, code_dir), _owner(ref_file, code_dir)
            if a == b or first < 0 or max(first, second) < threshold or overlap < MIN_OVERLAP:
                continue
            if a > b:
                a, b, first, second = b, a, second, first
            matches[((a, b), name)] = CodeMatch((a, b), name, (float(first), float(second)), overlap)
    return sorted(matches.values(), key=lambda m: (-max(m.similarity), m.students, m.file))


# --------------------------------------------------------------------------- the report


def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def report_markdown(models: ModelCheck, matches: Sequence[CodeMatch], with_code: Sequence[str],
                    problems: Dict[str, str], threshold: float) -> str:
    """similarity.md: what to look at, for a human; nothing here is a verdict."""
    lines = ["# Similarity report", "",
             "For a human to look at: identical models and shared code can have innocent causes (the handout, "
             "the lecture's code, a study group that talked). Nothing here changes a grade.", "",
             "## Models", "", f"{models.checked} `.ptmodel` files read."]
    if not (models.same_file or models.same_weights):
        lines.append("No two students submitted the same model.")
    for group in models.same_file:
        lines.append(f"- the same file (SHA-256): {', '.join(map(_md, group))}")
    for group in models.same_weights:
        lines.append(f"- different files, the same decoded weights: {', '.join(map(_md, group))}")
    if models.unreadable:
        lines += ["", "Not compared (the file cannot be read safely):"]
        lines += [f"- {_md(sid)}: {_md(why)}" for sid, why in sorted(models.unreadable.items())]
    lines += ["", "## Code", "",
              f"{len(with_code)} students with code left once the handout's lines are removed; files compared with "
              f"files of the same name; a pair is listed when at least {threshold:.0%} of one file's tokens "
              f"(and {MIN_OVERLAP} tokens or more) are found in the other. The matching code is highlighted in "
              "`code-report.html`.", ""]
    if matches:
        lines += ["| students | file | share of the first's | share of the second's | tokens in common |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {_md(m.students[0])}, {_md(m.students[1])} | {_md(m.file)} | {m.similarity[0]:.0%} | "
                  f"{m.similarity[1]:.0%} | {m.overlap} |" for m in matches]
    else:
        lines.append("No pair above the threshold.")
    if problems:
        lines += ["", "Not compared:"] + [f"- {_md(sid)}: {_md(why)}" for sid, why in sorted(problems.items())]
    return "\n".join(lines) + "\n"


def report_csv(models: ModelCheck, matches: Sequence[CodeMatch]) -> str:
    """similarity.csv: one row per flagged pair or group."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "students", "file", "similarity", "tokens_in_common"])
    writer.writerows(["same model file", " ".join(g), "", "1", ""] for g in models.same_file)
    writer.writerows(["same model weights", " ".join(g), "", "1", ""] for g in models.same_weights)
    writer.writerows(["code", " ".join(m.students), m.file, f"{max(m.similarity):.3f}", m.overlap] for m in matches)
    return buffer.getvalue()


def run(submissions: Path, out: Path, skeleton: Path = REPO / "assignment",
        threshold: float = DEFAULT_THRESHOLD) -> Tuple[ModelCheck, List[CodeMatch], Dict[str, str]]:
    """Both checks; write every output into ``out``; return (models, code matches, problems)."""
    import shutil
    if not Path(submissions).is_dir():
        raise SimilarityError(f"{submissions} is not a folder; give the folder of submissions that grade reads")
    if not skeleton.is_dir() or not any(skeleton.rglob("*.py")):
        raise SimilarityError(f"the handout {skeleton} holds no Python files; pass --skeleton assignment/ "
                              "(run `python -m grader assign` first if it is missing)")
    out.mkdir(parents=True, exist_ok=True)
    code_dir = out / "code"
    shutil.rmtree(code_dir, ignore_errors=True)
    code_dir.mkdir()
    models = check_models(submissions)
    with_code, problems = collect_code(submissions, code_dir, handout_lines(skeleton))
    (out / "code-report.html").unlink(missing_ok=True)
    matches = compare_code(code_dir, skeleton, out / "code-report.html", threshold) if len(with_code) > 1 else []
    write_atomic(out / "similarity.md", report_markdown(models, matches, with_code, problems, threshold))
    write_atomic(out / "similarity.csv", report_csv(models, matches))
    return models, matches, problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader similarity", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("submissions", type=Path, help="the folder of archives and .ptmodel files")
    parser.add_argument("--out", type=Path, required=True, help="the report's folder (keep it private)")
    parser.add_argument("--skeleton", type=Path, default=REPO / "assignment",
                        help="the handout students started from: its lines never count as copied")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="share of a file's tokens found in another student's file that lists the pair")
    args = parser.parse_args(argv)
    if not 0 < args.threshold <= 1:
        parser.error("--threshold must be above 0 and at most 1 (a share: 0.5 is half of the file)")
    try:
        models, matches, problems = run(args.submissions, args.out, args.skeleton, args.threshold)
    except SimilarityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(models.same_file) + len(models.same_weights)} groups of identical models, {len(matches)} pairs "
          f"of similar files, {len(problems)} submissions not compared: {args.out / 'similarity.md'}")
    return 0
