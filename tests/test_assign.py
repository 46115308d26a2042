"""The handout generator (grader/assign.py) and the committed assignment/ it generates."""
import ast
import textwrap
import zipfile

import pytest

from grader import homework
from grader.assign import ASSIGNMENT, SOLUTIONS, MarkerError, render, solution_lines, source_files, strip_solutions
from grader.reference import original_bytes
from tests.conftest import REPO, run_python

GOOD = textwrap.dedent("""\
    def f(x):
        # TODO: double x
        # BEGIN SOLUTION
        y = 2 * x
        return y
        # END SOLUTION
        # STUB: y = x
        # STUB: return y
""")

BAD = {
    "unclosed": "def f():\n    # BEGIN SOLUTION\n    return 1\n",
    "nested": ("def f():\n    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    return 1\n"
               "    # END SOLUTION\n    # END SOLUTION\n    # STUB: pass\n"),
    "no-stub": "def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n    return 2\n",
    "end-without-begin": "def f():\n    return 1\n    # END SOLUTION\n    # STUB: pass\n",
}


def test_assignment_is_in_sync_with_solutions():
    """`python -m grader assign --check` passes: assignment/ is exactly what solutions/ generates."""
    result = run_python(["-m", "grader", "assign", "--check"], cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


def test_strip_replaces_the_region_by_its_stub_at_the_same_indentation():
    """The solution code disappears, the TODO stays, and every STUB line becomes code."""
    assert strip_solutions(GOOD) == "def f(x):\n    # TODO: double x\n    y = x\n    return y\n"


@pytest.mark.parametrize("source", BAD.values(), ids=BAD.keys())
def test_malformed_regions_raise_marker_error(source):
    """Unclosed, nested, stub-less regions and a stray END are errors that name the file and line."""
    with pytest.raises(MarkerError, match=r"f\.py:\d+"):
        strip_solutions(source, "f.py")


def python_files():
    """The Python files of the handout (staff/ and generated files stay out of it)."""
    return [p for p in source_files(SOLUTIONS) if p.suffix == ".py"]


def test_the_todo_files_have_solution_regions():
    """The four TODO files of the handout (and pruning.py) do contain solution regions."""
    with_regions = {str(p) for p in python_files() if solution_lines((SOLUTIONS / p).read_text())}
    assert {"net/prune.py", "net/quantization.py", "net/huffmancoding.py", "pruning.py"} <= with_regions


@pytest.mark.parametrize("relative", python_files(), ids=str)
def test_no_solution_line_leaks_into_the_assignment(relative):
    """No code line of a solution region appears in the assignment file, and no marker is left there."""
    handout = (ASSIGNMENT / relative).read_text()
    handout_lines = {line.strip() for line in handout.splitlines()}
    leaked = [line for line in solution_lines((SOLUTIONS / relative).read_text()) if line in handout_lines]
    assert leaked == []
    assert "BEGIN SOLUTION" not in handout and "END SOLUTION" not in handout and "# STUB:" not in handout


def test_generated_files_compile():
    """Every generated Python file (the stubs included) is valid Python."""
    for relative, data in render().items():
        if relative.suffix == ".py":
            ast.parse(data.decode("utf-8"), filename=str(relative))


def test_the_handout_zip_is_exactly_what_students_get(tmp_path):
    """`assign --out handout.zip`: the generated files only (no solution line, no suite, no staff code), and the
    same bytes twice."""
    first, again = tmp_path / "handout.zip", tmp_path / "again.zip"
    for out in (first, again):
        result = run_python(["-m", "grader", "assign", "--out", out], cwd=REPO, timeout=60)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == again.read_bytes()
    with zipfile.ZipFile(first) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    assert set(contents) == {f"assignment/{p.as_posix()}" for p in render()}
    assert not any(part in name for name in contents for part in ("grader/", "staff/", "suites", "variants"))
    for relative in python_files():
        handed_out = {line.strip() for line in contents[f"assignment/{relative}"].decode("utf-8").splitlines()}
        assert not set(solution_lines((SOLUTIONS / relative).read_text())) & handed_out, relative


def test_the_handout_readme_is_written_from_the_homeworks_facts():
    text = (ASSIGNMENT / "README.md").read_text()
    for part in homework.PARTS:
        assert all(f"`{todo}`" in text for todo in part.todos) and f"| {part.points:g} |" in text
    assert f"strictly above {float(homework.GATE):g}%" in text and f"{original_bytes():,} bytes" in text
    assert all(f"`{name}`" in text for name in homework.STUDENT_FILES)
    part2 = text.split("## Part 2")[1].split("## What to hand in")[0]
    for part in homework.DEPLOY_PARTS:
        assert all(f"`{todo}`" in part2 for todo in part.todos) and f"| {part.points:g} |" in part2
    assert f"{homework.DEPLOY_POINTS:g} points" in part2 and "python -m deploy.pipeline" in part2
    assert all(f"`{name}`" in part2 for name in homework.DEPLOY_STUDENT_FILES)
    assert "../shared" not in text and "solutions/" not in text
