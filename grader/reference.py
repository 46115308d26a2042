"""The reference solutions, imported under private names.

``solutions/`` is written to run from inside its own folder, with ``net`` and
``util`` as top-level modules. A student's code uses the same names, so the
grader never imports the reference under them: ``reference()`` loads
``solutions/net/*.py`` and ``solutions/util.py`` as the private modules
``grader._reference.net.*`` and ``grader._reference.util``. While
``net/models.py`` runs its own ``from net.prune import ...``, ``net`` and
``net.prune`` point at the private copies for a moment and are restored right
after, so whatever ``net`` a process had before is left untouched.
"""
import functools
import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
PACKAGE = "grader._reference"
SOURCES = ("net/__init__.py", "net/prune.py", "net/models.py", "net/huffman_core.py", "net/huffmancoding.py", "util.py")
"""The reference files the leaderboard runs; their contents are part of its cache key."""


def _load(name: str, path: Path, package_dirs: tuple = ()) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(d) for d in package_dirs] if package_dirs else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def reference() -> SimpleNamespace:
    """The reference modules: ``.models``, ``.huffman`` (``net/huffmancoding.py``), ``.util``, ``.AlexNet``."""
    root = ModuleType(PACKAGE, "the reference solutions under a private name")
    root.__path__ = [str(SOLUTIONS)]
    sys.modules.setdefault(PACKAGE, root)
    net = _load(f"{PACKAGE}.net", SOLUTIONS / "net" / "__init__.py", package_dirs=(SOLUTIONS / "net",))
    prune = _load(f"{PACKAGE}.net.prune", SOLUTIONS / "net" / "prune.py")
    saved = {name: sys.modules.get(name) for name in ("net", "net.prune")}
    sys.modules.update({"net": net, "net.prune": prune})
    try:
        models = _load(f"{PACKAGE}.net.models", SOLUTIONS / "net" / "models.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    huffman = _load(f"{PACKAGE}.net.huffmancoding", SOLUTIONS / "net" / "huffmancoding.py")
    util = _load(f"{PACKAGE}.util", SOLUTIONS / "util.py")
    return SimpleNamespace(models=models, huffman=huffman, util=util, AlexNet=models.AlexNet)


def source_digest() -> str:
    """A short hash of the reference files the leaderboard runs (changes when any of them changes)."""
    digest = hashlib.sha256()
    for relative in SOURCES:
        digest.update(relative.encode() + b"\0" + (SOLUTIONS / relative).read_bytes())
    return digest.hexdigest()[:16]
