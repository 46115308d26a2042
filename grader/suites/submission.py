"""The folder a submission is graded in, and safe imports of the student's modules from it.

A submission holds the four files of ``STUDENT_FILES``. The grader adds the
files the homework provides (``PROVIDED_FILES``) from the reference
solutions, so a student's edits to them (or their absence) never matter.
The student's ``net/models.py`` is not used: the suites build their own
small models on the student's ``PruningModule``.
"""
import importlib
import importlib.util
import shutil
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Dict, List

STUDENT_FILES = ("net/prune.py", "net/quantization.py", "net/huffmancoding.py", "pruning.py")
PROVIDED_FILES = ("util.py", "net/__init__.py", "net/models.py")
REFERENCE_FILES = PROVIDED_FILES + ("net/quantization.py", "net/huffmancoding.py")
"""What the reference folder must hold: the provided files and the two modules the suites compare with."""


class StudentCodeError(Exception):
    """The student's code could not be used; the message says why, in the student's terms."""


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


def describe_exception(error: BaseException, work: Path) -> str:
    """``Type: message (net/prune.py, line 12, in _prune)``: the last line of the student's code in the traceback."""
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve().is_relative_to(Path(work).resolve())]
    if frames:
        frame = frames[-1]
        relative = Path(frame.filename).resolve().relative_to(Path(work).resolve())
        text += f" ({relative}, line {frame.lineno}, in {frame.name})"
    return text


class StudentModules:
    """Imports the student's modules from the assembled folder, each once, and remembers failures."""

    def __init__(self, work: Path) -> None:
        self.work = Path(work)
        self.failures: Dict[str, str] = {}
        if str(self.work) not in sys.path:
            sys.path.insert(0, str(self.work))

    def load(self, dotted: str) -> ModuleType:
        """Import ``dotted`` (``"net.prune"``, ``"pruning"``...) or raise ``StudentCodeError``."""
        relative = dotted.replace(".", "/") + ".py"
        if dotted not in self.failures:
            if not (self.work / relative).is_file():
                self.failures[dotted] = f"{relative} is missing from your submission"
            else:
                try:
                    return importlib.import_module(dotted)
                except SystemExit as stop:
                    self.failures[dotted] = (f"importing {relative} called exit({stop.code!r}); "
                                             "a module must not exit when it is imported")
                except Exception as error:
                    hint = (" (keep the script's work under `if __name__ == \"__main__\":`)"
                            if relative == "pruning.py" else "")
                    self.failures[dotted] = f"importing {relative} failed: {describe_exception(error, self.work)}{hint}"
        raise StudentCodeError(self.failures[dotted])

    def call(self, context: str, function, *args, **kwargs):
        """``function(*args, **kwargs)``; an exception becomes an ``AssertionError`` that starts with ``context``."""
        try:
            return function(*args, **kwargs)
        except Exception as error:
            raise AssertionError(f"{context}: your code raised {describe_exception(error, self.work)}") from None


def load_reference(reference: Path, relative: str) -> ModuleType:
    """Load a reference module under a private name, so it never shadows the student's."""
    name = "_grader_reference_" + relative.replace("/", "_")[:-3]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(reference) / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
