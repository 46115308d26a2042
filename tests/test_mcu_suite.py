"""The microcontroller track's hidden suite (grader/mcu_suite.py) and its buggy variants."""
import shutil

import pytest

from grader import mcu_facts, mcu_suite
from grader.variants import AnchorError, plant
from tests.conftest import ASSIGNMENT, SOLUTIONS

pytestmark = pytest.mark.heavy


def copy_of(source, tmp_path):
    folder = tmp_path / "submission"
    for relative in mcu_facts.STUDENT_FILES:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, folder / relative)
    return folder


def test_checks_cover_the_todos_of_the_facts_and_their_points():
    assert list(mcu_suite.CHECKS) == [todo.where for todo in mcu_facts.TODOS]
    assert mcu_facts.TRACK_POINTS == sum(mcu_suite.POINTS.values())


def test_reference_full_marks_skeleton_zero(tmp_path):
    reference, skeleton = mcu_suite.grade_many([(SOLUTIONS, None), (ASSIGNMENT, None)])
    assert [r.output for r in reference] == ["passed"] * len(reference)
    assert [r.score for r in skeleton] == [0.0] * len(skeleton), [r.output for r in skeleton]


def test_a_missing_file_costs_its_todos_only(tmp_path):
    folder = copy_of(SOLUTIONS, tmp_path)
    (folder / "mcu/budget.py").unlink()
    results = {r.todo: r for r in mcu_suite.grade(folder, ["mcu/binary.py: pack_signs", "mcu/budget.py: sram_bytes"])}
    assert results["mcu/binary.py: pack_signs"].score == 3
    assert results["mcu/budget.py: sram_bytes"].score == 0 and "missing" in results["mcu/budget.py: sram_bytes"].output


def test_an_exception_or_exit_in_student_code_is_reported_not_raised(tmp_path):
    folder = copy_of(SOLUTIONS, tmp_path)
    path = folder / "mcu/budget.py"
    path.write_text(path.read_text().replace("    return sum(layer.macs", "    raise SystemExit(3)\n    return sum(layer.macs"))
    result, = mcu_suite.grade(folder, ["mcu/budget.py: latency_s"])
    assert result.score == 0 and "SystemExit" in result.output and "budget.py" in result.output


def test_every_variant_loses_the_points_of_its_todo(tmp_path):
    folders = []
    for bug in mcu_suite.BUGS:
        folder = copy_of(SOLUTIONS, tmp_path / bug.name)
        path = folder / bug.file
        planted = plant(bug, path.read_text())
        assert planted != path.read_text(), bug.name
        path.write_text(planted)
        folders.append((folder, [bug.todo]))
    for bug, (result,) in zip(mcu_suite.BUGS, mcu_suite.grade_many(folders)):
        assert result.score == 0, f"{bug.name} ({bug.description}) kept its points: {result.output}"


def test_a_drifted_anchor_names_the_variant():
    bug = mcu_suite.BUGS[0]
    with pytest.raises(AnchorError, match=bug.name):
        plant(bug, "nothing to find here")
