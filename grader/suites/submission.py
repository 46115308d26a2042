"""The folder a submission is graded in: the student's files and the provided ones.

A submission holds the four files of ``STUDENT_FILES``. The grader adds the
files the homework provides (``PROVIDED_FILES``) from the reference
solutions, so a student's edits to them (or their absence) never matter.
The student's ``net/models.py`` is not used: the suites build their own
small models on the student's ``PruningModule``. The folder goes into the
box (``grader/box.py``), read-only; nothing outside the box imports it.
"""
import shutil
from pathlib import Path
from typing import List

STUDENT_FILES = ("net/prune.py", "net/quantization.py", "net/huffmancoding.py", "pruning.py")
PROVIDED_FILES = ("util.py", "net/__init__.py", "net/models.py", "net/huffman_core.py")
REFERENCE_FILES = PROVIDED_FILES + ("net/quantization.py", "net/huffmancoding.py")
"""What the reference folder must hold: the provided files and the two modules the suites compare with."""


def assemble(submission: Path, reference: Path, work: Path) -> List[str]:
    """Copy the student's files and the provided ones into ``work``; return the student files missing.

    A symbolic link counts as missing: a submission holds plain files.
    """
    missing = []
    for relative in STUDENT_FILES:
        source = Path(submission) / relative
        if source.is_file() and not source.is_symlink():
            copy(source, work / relative)
        else:
            missing.append(relative)
    for relative in PROVIDED_FILES:
        copy(Path(reference) / relative, work / relative)
    return missing


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
