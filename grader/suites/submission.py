"""The folder a submission is graded in: the student's files and the provided ones.

A submission holds the files of ``STUDENT_FILES`` (``grader/homework.py``). The grader adds the
files the homework provides (``PROVIDED_FILES``) from the reference
solutions, so a student's edits to them (or their absence) never matter.
The student's ``net/models.py`` is not used: the suites build their own
small models on the student's ``PruningModule``. The folder goes into the
box (``grader/box.py``), read-only; nothing outside the box imports it.
"""
import shutil
from pathlib import Path
from typing import List

from grader.homework import (DEPLOY_PROVIDED_FILES, DEPLOY_STUDENT_FILES, MCU_PROVIDED_FILES, MCU_STUDENT_FILES,
                             PROVIDED_FILES, STUDENT_FILES)

FILES = {"compression": (STUDENT_FILES, PROVIDED_FILES),
         "deploy": (DEPLOY_STUDENT_FILES, PROVIDED_FILES + DEPLOY_PROVIDED_FILES),
         "mcu": (MCU_STUDENT_FILES, MCU_PROVIDED_FILES)}
"""``(student files, provided files)`` of each homework: Part 1 (compression), Part 2 (deploy) and the
microcontroller track (mcu)."""

REFERENCE_FILES = PROVIDED_FILES + ("net/quantization.py", "net/huffmancoding.py")
"""What the reference folder must hold: the provided files and the two modules the suites compare with."""


def assemble(submission: Path, reference: Path, work: Path, homework: str = "compression") -> List[str]:
    """Copy the student's files and the provided ones of ``homework`` into ``work``; return the student files missing.

    A symbolic link counts as missing: a submission holds plain files.
    """
    student_files, provided_files = FILES[homework]
    missing = []
    for relative in student_files:
        source = Path(submission) / relative
        if source.is_file() and not source.is_symlink():
            copy(source, work / relative)
        else:
            missing.append(relative)
    for relative in provided_files:
        copy(Path(reference) / relative, work / relative)
    return missing


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
