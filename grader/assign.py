"""Generate the student handout ``assignment/`` from the reference ``solutions/``.

``solutions/`` is the only place where homework code is written. In its
Python files, every answer sits in a solution region followed by its stub::

    # TODO: what the student must write (kept in both versions)
    # BEGIN SOLUTION
    <reference code>                    (removed from the handout)
    # END SOLUTION
    # STUB: <code for the handout>      (one or more lines, uncommented in the handout)

The ``# STUB:`` lines are comments in the solutions and become code, at the
same indentation, in the handout. Every other file is copied unchanged;
generated files (``saves/``, ``data/``, caches) are skipped. The handout's
``README.md`` is written from the homework's facts (``grader/handout.py``).

``python -m grader assign --out handout.zip`` writes exactly what students
get (the same files) as one archive, byte-identical for identical sources.
"""
import io
import re
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List

from grader.files import write_atomic

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
ASSIGNMENT = REPO / "assignment"

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
STUB = re.compile(r"^(\s*)# STUB: ?(.*)$")
SKIPPED_PARTS = {"__pycache__", "data", "encodings", ".pytest_cache"}
SKIPPED_NAMES = {"log.txt"}
SKIPPED_SUFFIXES = {".pyc", ".ptmodel"}


class MarkerError(ValueError):
    """A solution region is malformed; the message gives the file and line."""


def strip_solutions(source: str, filename: str = "<source>") -> str:
    """Return ``source`` with every solution region replaced by its stub."""
    lines = source.splitlines(keepends=True)
    out: List[str] = []
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if text == END:
            raise MarkerError(f"{filename}:{i + 1}: '{END}' without '{BEGIN}'")
        if text != BEGIN:
            out.append(lines[i])
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].strip() != END:
            if lines[i].strip() == BEGIN:
                raise MarkerError(f"{filename}:{i + 1}: solution regions cannot be nested")
            i += 1
        if i == len(lines):
            raise MarkerError(f"{filename}:{start + 1}: '{BEGIN}' is never closed by '{END}'")
        i += 1
        stub_start = i
        while i < len(lines) and STUB.match(lines[i]):
            indent, code = STUB.match(lines[i]).groups()
            out.append(f"{indent}{code}\n")
            i += 1
        if i == stub_start:
            raise MarkerError(f"{filename}:{start + 1}: the solution region has no '# STUB:' line after it")
    return "".join(out)


def solution_lines(source: str) -> List[str]:
    """The stripped, non-blank code lines inside the solution regions of ``source``."""
    found, inside = [], False
    for line in source.splitlines():
        text = line.strip()
        if text in (BEGIN, END):
            inside = text == BEGIN
        elif inside and text and not text.startswith("#"):
            found.append(text)
    return found


def _is_generated(relative: Path) -> bool:
    return (bool(SKIPPED_PARTS.intersection(relative.parts)) or relative.name in SKIPPED_NAMES
            or relative.suffix in SKIPPED_SUFFIXES or relative.parts[0] == "saves" and relative.name != ".gitkeep")


def source_files(root: Path = SOLUTIONS) -> Iterable[Path]:
    """Files of ``root`` that belong to the handout, as paths relative to it."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not _is_generated(relative):
            yield relative


README = Path("README.md")


def render(root: Path = SOLUTIONS) -> Dict[Path, bytes]:
    """The handout's files: relative path -> contents."""
    from grader.handout import readme
    from grader.reference import original_bytes
    files = {README: readme(original_bytes()).encode("utf-8")}
    for relative in source_files(root):
        data = (root / relative).read_bytes()
        if relative.suffix == ".py":
            data = strip_solutions(data.decode("utf-8"), str(root / relative)).encode("utf-8")
        files[relative] = data
    return files


def write(files: Dict[Path, bytes], target: Path = ASSIGNMENT) -> None:
    """Replace the handout's files in ``target`` with ``files``; leave generated outputs alone."""
    target.mkdir(parents=True, exist_ok=True)
    for relative in list(source_files(target)):
        if relative not in files:
            (target / relative).unlink()
    for relative, data in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)


def differences(files: Dict[Path, bytes], target: Path = ASSIGNMENT) -> List[str]:
    """Human-readable list of how ``target`` differs from ``files`` (empty when in sync)."""
    problems = []
    present = set(source_files(target)) if target.exists() else set()
    for relative in sorted(present - set(files)):
        problems.append(f"{relative}: in assignment/ but not generated from solutions/")
    for relative, data in sorted(files.items()):
        path = target / relative
        if not path.exists():
            problems.append(f"{relative}: missing from assignment/")
        elif path.read_bytes() != data:
            problems.append(f"{relative}: out of date")
    return problems


def write_zip(files: Dict[Path, bytes], out: Path) -> None:
    """The handout as one zip (its files under ``assignment/``), with fixed timestamps; written atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, data in sorted(files.items()):
            info = zipfile.ZipInfo(f"assignment/{relative.as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    write_atomic(out, buffer.getvalue())


def main(argv: List[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m grader assign", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if assignment/ is not what solutions/ generates")
    parser.add_argument("--out", type=Path, metavar="ZIP",
                        help="write the handout as this zip instead of into assignment/ (what students get)")
    args = parser.parse_args(argv)
    try:
        files = render()
    except MarkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        problems = differences(files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("assignment/ is out of date: run `python -m grader assign`", file=sys.stderr)
        return 1 if problems else 0
    if args.out:
        write_zip(files, args.out)
        print(f"wrote {args.out}: {len(files)} files, no solution and no grader code")
        return 0
    write(files)
    print(f"wrote {len(files)} files to {ASSIGNMENT.relative_to(REPO)}/")
    return 0
