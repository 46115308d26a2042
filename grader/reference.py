"""Homework code imported from a folder under a private package name: the one loader of the grader.

The handout runs from inside its own folder, with ``net`` and ``util`` as
top-level modules, and a student's code uses the same names. So the grader
never imports homework code under those names: :func:`load` makes the folder
a package of another name (``grader._reference`` for ``solutions/``), whose
``net`` is a real package (its files import each other relatively) and whose
``util`` is a plain module. Whatever ``net`` a process already had is left
untouched. The reference (:func:`reference`), the leaderboard, sensitivity,
the suites' judge and the staff recipe all load homework code this way.

The scripts (``pruning.py``...) import ``net`` and ``util`` by their
top-level names, as a student runs them; :func:`load_script` lends them those
names while the script is imported, then puts back what was there.
"""
import contextlib
import functools
import hashlib
import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Dict, Iterator

from grader.homework import MODEL, PROVIDED_FILES

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
PACKAGE = "grader._reference"
SOURCES = tuple(sorted(set(PROVIDED_FILES) | {"net/prune.py", "net/huffmancoding.py", "net/quantization.py"}))
"""The reference files the leaderboard runs; their contents are part of its cache key."""


def load(folder: Path, package: str) -> ModuleType:
    """The homework in ``folder`` as the package ``package``: ``package.net.models``, ``package.util``...

    Loading the same folder under the same name twice returns the first package.
    """
    folder = Path(folder).resolve()
    existing = sys.modules.get(package)
    if existing is not None:
        if list(getattr(existing, "__path__", [])) != [str(folder)]:
            raise ValueError(f"{package} is already loaded from {list(existing.__path__)}, not {folder}")
        return existing
    root = ModuleType(package, f"the homework code of {folder}, under a private name")
    root.__path__ = [str(folder)]
    sys.modules[package] = root
    return root


def module(package: ModuleType, relative: str) -> ModuleType:
    """The module of ``package`` at ``relative`` (``"net/huffmancoding.py"``), imported on first use.

    A folder holding ``homework.py`` (the facts: ``mcu/`` imports them as ``homework``) lends its own copy
    under that top-level name while the module is imported.
    """
    name = f"{package.__name__}.{relative[:-3].replace('/', '.')}"
    folder = Path(package.__path__[0])
    if name in sys.modules or relative == "homework.py" or not (folder / "homework.py").is_file():
        return importlib.import_module(name)
    with lent({"homework": module(package, "homework.py")}):
        return importlib.import_module(name)


@contextlib.contextmanager
def lent(modules: Dict[str, ModuleType]) -> Iterator[None]:
    """``sys.modules`` holds ``modules`` under their names inside the block; what was there before comes back."""
    saved = {key: sys.modules.get(key) for key in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for key, previous in saved.items():
            if previous is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = previous


def load_script(package: ModuleType, name: str) -> ModuleType:
    """Import the handout script ``name`` (``"pruning"``) of ``package``, lending it ``net`` and ``util``."""
    names = {"net": module(package, "net/__init__.py"), "util": module(package, "util.py")}
    names.update({f"net.{m.rsplit('.', 1)[1]}": sys.modules[m] for m in list(sys.modules)
                  if m.startswith(f"{package.__name__}.net.")})
    with lent(names):
        return module(package, f"{name}.py")


@functools.lru_cache(maxsize=1)
def reference() -> SimpleNamespace:
    """The reference modules: ``.models``, ``.prune``, ``.quantization``, ``.huffman``, ``.util``, ``.AlexNet``."""
    package = load(SOLUTIONS, PACKAGE)
    models = module(package, MODEL[0])
    return SimpleNamespace(models=models, prune=module(package, "net/prune.py"),
                           quantization=module(package, "net/quantization.py"),
                           huffman=module(package, "net/huffmancoding.py"), util=module(package, "util.py"),
                           AlexNet=getattr(models, MODEL[1]))


@functools.lru_cache(maxsize=1)
def original_bytes() -> int:
    """Bytes of the homework's model in float32: what every compression rate is measured against."""
    import torch
    with torch.device("meta"):
        model = reference().AlexNet()
    return sum(p.numel() * p.element_size() for p in model.parameters())


def source_digest() -> str:
    """A short hash of the reference files the leaderboard runs (changes when any of them changes)."""
    digest = hashlib.sha256()
    for relative in SOURCES:
        digest.update(relative.encode() + b"\0" + (SOLUTIONS / relative).read_bytes())
    return digest.hexdigest()[:16]
