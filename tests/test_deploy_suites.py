"""Part 2's hidden suites (grader/suites/deploy/): the contract, and, with --run-slow, the real judge's scores.

The fast tests check what can be checked without grading: the listed tests
add up to Part 2's points in grader/homework.py, and every Part 2 variant
applies to the current solution. The heavy test grades, in the box, the
reference (54 of 54), the untouched skeleton (0 on every test) and each of the
39 buggy variants of grader/variants.py on its part (it must lose points on its
own TODO): 6.5 minutes on the quiet 2-core machine, so CI runs it after the
default run (--run-heavy). A slow test (--run-slow, not in CI: the heavy one
covers it) grades only the quantisation-aware training and graph capture TODOs
(the reference, the skeleton and their ten variants; about three minutes).
"""
import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import box, homework, variants
from tests.conftest import ASSIGNMENT, REPO, SOLUTIONS, grade_in_parallel
RUNNER = [sys.executable, "-m", "grader.suites.runner"]
TODOS = {todo: part.name for part in homework.DEPLOY_PARTS for todo in part.todos}


def submission(folder: Path, base: Path = SOLUTIONS, variant=None) -> Path:
    """The Part 2 student files of ``base`` in ``folder``, with the buggy ``variant`` planted."""
    for relative in homework.DEPLOY_STUDENT_FILES:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / relative, folder / relative)
    if variant is not None:
        variants.apply(variant, folder)
    return folder


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """The box every run uses, probed once: bubblewrap where it works, as ``grade`` would choose."""
    return box.strongest_level()[0]


def grade(folder: Path, results: Path, *options: str) -> list:
    process = subprocess.run([*RUNNER, str(folder), str(results), "--homework", "deploy",
                              "--isolation", isolation(), *options],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    return json.loads(results.read_text())["tests"]


def test_listed_tests_add_up_to_the_facts():
    process = subprocess.run([*RUNNER, "--list", "--homework", "deploy"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 0, process.stderr
    listed = json.loads(process.stdout)
    points = dict.fromkeys(homework.DEPLOY_PART_POINTS, 0.0)
    for test in listed:
        assert TODOS[test["todo"]] == test["part"], test
        points[test["part"]] += test["max_score"]
    assert points == homework.DEPLOY_PART_POINTS
    assert {test["todo"] for test in listed} == set(TODOS), "every Part 2 TODO has a test"
    assert homework.deploy_total() == homework.DEPLOY_POINTS == 54.0


def test_part_one_list_is_unchanged_by_part_two():
    process = subprocess.run([*RUNNER, "--list"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert {test["part"] for test in json.loads(process.stdout)} == set(homework.PART_POINTS)


@pytest.mark.parametrize("name", variants.deploy_names())
def test_variant_applies_and_compiles(name):
    planted = variants.bug(name)
    assert planted.todo in TODOS and TODOS[planted.todo] == planted.part
    (relative, text), = variants.variant_files(name).items()
    assert text != (SOLUTIONS / relative).read_text()
    compile(text, relative, "exec")


def test_at_least_a_dozen_variants_cover_every_part():
    assert len(variants.deploy_names()) >= 12
    assert {variants.bug(name).part for name in variants.deploy_names()} == set(homework.DEPLOY_PART_NAMES)


@pytest.mark.heavy
@pytest.mark.timeout(3600)  # 41 gradings; 6.5 minutes on the quiet 2-core machine
def test_reference_full_skeleton_zero_every_variant_loses(tmp_path):
    jobs = {"reference": (SOLUTIONS, ()), "skeleton": (ASSIGNMENT, ())}
    for name in variants.deploy_names():
        jobs[name] = (submission(tmp_path / name, variant=name), ("--part", variants.bug(name).part))
    results = grade_in_parallel(grade, jobs, tmp_path)
    reference = results.pop("reference")
    assert [t["output"] for t in reference if t["score"] != t["max_score"]] == []
    assert sum(t["score"] for t in reference) == homework.DEPLOY_POINTS
    assert [t["name"] for t in results.pop("skeleton") if t["score"]] == []
    kept = [name for name, tests in results.items()
            if all(t["score"] == t["max_score"] for t in tests if t["todo"] == variants.bug(name).todo)]
    assert kept == [], f"variants that lose no points on their TODO: {kept}"


QAT_AND_CAPTURE = ("deploy/int8.py: train_qat", "deploy/int8.py: quantize_qat", "deploy/capture.py: capture",
                   "deploy/capture.py: check_equivalent")


def test_qat_and_capture_have_their_variants():
    """Two or three realistic bugs per TODO of quantisation-aware training and graph capture."""
    counts = {todo: sum(variants.bug(name).todo == todo for name in variants.deploy_names())
              for todo in QAT_AND_CAPTURE}
    assert all(count >= 2 for count in counts.values()), counts


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 14 gradings of one part each; about three and a half minutes on 2 cores
def test_qat_and_capture_reference_full_skeleton_zero_each_variant_loses_on_its_todo_only(tmp_path):
    parts = sorted({TODOS[todo] for todo in QAT_AND_CAPTURE})
    jobs = {f"{base}_{part}": (folder, ("--part", part)) for base, folder in (("reference", SOLUTIONS),
                                                                              ("skeleton", ASSIGNMENT))
            for part in parts}
    names = [name for name in variants.deploy_names() if variants.bug(name).todo in QAT_AND_CAPTURE]
    for name in names:
        jobs[name] = (submission(tmp_path / name, variant=name), ("--part", variants.bug(name).part))
    results = grade_in_parallel(grade, jobs, tmp_path)
    for part in parts:
        reference = results.pop(f"reference_{part}")
        assert [t["output"] for t in reference if t["score"] != t["max_score"]] == []
        assert sum(t["score"] for t in reference) == homework.DEPLOY_PART_POINTS[part]
        assert [t["name"] for t in results.pop(f"skeleton_{part}") if t["score"]] == []
    lost = {name: sorted({t["todo"] for t in tests if t["score"] < t["max_score"]}) for name, tests in results.items()}
    assert lost == {name: [variants.bug(name).todo] for name in names}


def test_the_guide_lists_every_variant_with_its_part():
    guide = (REPO / "docs" / "DEPLOY.md").read_text().split("## Buggy variants")[1]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", guide, re.MULTILINE)
    assert sorted(rows) == sorted((name, variants.bug(name).part) for name in variants.deploy_names())
