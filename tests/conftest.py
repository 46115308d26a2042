"""Shared set-up of this repository's tests.

The reference scripts import ``net`` and ``util`` as top-level modules (they
are run from inside ``solutions/``), so ``solutions/`` goes first on
``sys.path`` here. Anything about ``assignment/`` runs in a subprocess with
its own working directory, so the two ``net`` packages never meet in one
interpreter.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
ASSIGNMENT = REPO / "assignment"

if str(SOLUTIONS) not in sys.path:
    sys.path.insert(0, str(SOLUTIONS))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow")
    parser.addoption("--run-heavy", action="store_true", default=False,
                     help="also run the tests marked heavy (CI runs them after the default run)")


def pytest_collection_modifyitems(config, items):
    for marker, option in (("slow", "--run-slow"), ("heavy", "--run-heavy")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"{marker}: add {option} to run it")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def run_python(args, cwd, env=None, timeout=240):
    """Run ``python *args`` in ``cwd`` with this interpreter; return the CompletedProcess."""
    full_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    full_env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def alexnet():
    """A freshly initialised reference AlexNet, seeded."""
    import torch
    from net.models import AlexNet
    torch.manual_seed(0)
    return AlexNet()


def small_net():
    """A tiny PruningModule for 32x32 RGB input: two conv and two fc layers of different scales.

    The layers' weights are scaled differently (conv_a x10, fc_b x0.1), so a
    threshold computed over the whole model would differ from a per-layer one.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from net.prune import PruningModule

    class SmallNet(PruningModule):
        def __init__(self):
            super().__init__()
            self.conv_a = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
            self.conv_b = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
            self.fc_a = nn.Linear(16 * 4, 32)
            self.fc_b = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.conv_a(x))
            x = F.relu(self.conv_b(x))
            x = F.adaptive_avg_pool2d(x, 2).flatten(1)
            return self.fc_b(F.relu(self.fc_a(x)))

    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():
        model.conv_a.weight.mul_(10.0)
        model.fc_b.weight.mul_(0.1)
    return model


@pytest.fixture
def small_model():
    return small_net()


@pytest.fixture(scope="session")
def shared_alexnet_session():
    """An AlexNet pruned hard (about 99% per layer) and shared at 5 bits; do not modify it."""
    import torch
    from net.models import AlexNet
    from net.quantization import apply_weight_sharing
    torch.manual_seed(1)
    model = AlexNet()
    model.prune_by_percentile(1.0)
    apply_weight_sharing(model, bits=5)
    return model


@pytest.fixture
def shared_alexnet(shared_alexnet_session):
    """A private copy of the pruned, 5-bit shared AlexNet."""
    import copy
    return copy.deepcopy(shared_alexnet_session)


def grade_in_parallel(grade, jobs: dict, folder: Path) -> dict:
    """``{name: grade(submission, folder / "<name>.json", *options)}`` for ``jobs = {name: (submission, options)}``,
    two at a time (the suites' runner is single-threaded)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(grade, submission, folder / f"{name}.json", *options)
                   for name, (submission, options) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
