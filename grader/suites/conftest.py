"""Fixtures of the hidden suites: the student's modules, the reference modules, fixed seeds.

The runner (``runner.py``) assembles the submission in a work folder and
passes it with ``--work-dir``. Student modules are imported only inside
fixtures, so collecting the tests (``runner --list``) never runs student code.
"""
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.suites import REPO
from grader.suites.submission import StudentModules, load_reference


def pytest_addoption(parser) -> None:
    parser.addoption("--work-dir", help="folder holding the assembled submission (made by the runner)")
    parser.addoption("--reference", default=str(REPO / "solutions"),
                     help="folder of the reference solutions (util.py, net/...)")


@pytest.fixture(scope="session")
def student(request) -> StudentModules:
    work = request.config.getoption("--work-dir")
    if not work:
        pytest.fail("run the suites with `python -m grader.suites.runner SUBMISSION RESULTS`", pytrace=False)
    torch.set_num_threads(1)
    return StudentModules(Path(work))


@pytest.fixture
def prune(student):
    """The student's net/prune.py."""
    return student.load("net.prune")


@pytest.fixture
def retrain(student):
    """The student's pruning.py (and the provided util.py next to it)."""
    return student.load("pruning")


@pytest.fixture
def quantization(student):
    """The student's net/quantization.py."""
    return student.load("net.quantization")


@pytest.fixture
def huffman(student):
    """The student's net/huffmancoding.py."""
    return student.load("net.huffmancoding")


@pytest.fixture
def util(student):
    """The provided util.py (the reference copy, next to the student's files)."""
    return student.load("util")


@pytest.fixture(scope="session")
def reference(request):
    """Loads a reference module by its path, e.g. ``reference("net/huffmancoding.py")``."""
    folder = Path(request.config.getoption("--reference"))
    return lambda relative: load_reference(folder, relative)


@pytest.fixture(autouse=True)
def fixed_seeds():
    """Every test starts from the same global random state (student code may use it)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
