"""Fixtures of the hidden suites: the student's code in its box, the reference modules, fixed seeds.

The runner (``runner.py``) assembles the submission in a folder and passes
it with ``--submission``. The student's code runs only in the box that the
``student`` fixture opens (``grader/box.py``); this process, the judge,
never imports it, so collecting the tests (``runner --list``) and scoring
them cannot be touched by it.
"""
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.box import Box, Limits
from grader.suites import REPO
from grader.suites.student import Student


def pytest_addoption(parser) -> None:
    parser.addoption("--submission", help="folder holding the assembled submission (made by the runner)")
    parser.addoption("--isolation", default="bwrap", help="the box's level: bwrap or basic")
    parser.addoption("--limits", default="{}", help="grader.box.Limits as JSON")
    parser.addoption("--reference", default=str(REPO / "solutions"),
                     help="folder of the reference solutions (util.py, net/...)")


@pytest.fixture(scope="session")
def box(request):
    folder = request.config.getoption("--submission")
    if not folder:
        pytest.fail("run the suites with `python -m grader.suites.runner SUBMISSION RESULTS`", pytrace=False)
    limits = Limits(**json.loads(request.config.getoption("--limits")))
    with Box(Path(folder), limits, request.config.getoption("--isolation")) as opened:
        yield opened


@pytest.fixture(scope="session")
def student_session(box, request) -> Student:
    return Student(box, box.limits.test_timeout_s)


@pytest.fixture
def student(student_session) -> Student:
    """The student's code, in its box, with this test's time limit."""
    student_session.begin_test()
    return student_session


@pytest.fixture(scope="session")
def reference(request):
    """Loads a reference module by its path, e.g. ``reference("net/huffman_core.py")``."""
    folder = Path(request.config.getoption("--reference"))
    return lambda relative: load_reference(folder, relative)


def load_reference(reference: Path, relative: str):
    """Load a reference module under a private name (the judge's own copy, never the student's)."""
    name = "_grader_reference_" + relative.replace("/", "_")[:-3]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(reference) / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(autouse=True)
def fixed_seeds():
    """Every test starts from the same global random state (the judge's; the worker seeds each request)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
