"""The microcontroller track's hidden suites (grader/suites/mcu/), its variants, and the header the judge compiles.

Fast: the listed tests add up to ``homework.MCU_PARTS``, every variant of
``variants.MCU_BUGS`` applies, the worker's staged code has every operation
module, and the judge's reading of a C header (``mcu/export.py:
parse_header``) refuses every hostile header we tried, with a reason, before
anything is compiled. Heavy (a dozen gradings in the box, about 3 minutes
on 2 loaded cores): the reference gets 20 of 20, the skeleton 0 on every
test, each variant loses the points of its TODO, and a hostile submission
(an ``#include "/etc/passwd"`` header, a loop that never ends) loses only the
tests it attacks.
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
from mcu.export import HeaderError, header, integerize, parse_header
from tests.conftest import ASSIGNMENT, REPO, SOLUTIONS, grade_in_parallel
from tests.test_mcu_track import calibrated

RUNNER = [sys.executable, "-m", "grader.suites.runner"]
TODOS = {todo: part.name for part in homework.MCU_PARTS for todo in part.todos}


@functools.lru_cache(maxsize=1)
def exported() -> str:
    """The header of a small calibrated network, as mcu/export.py writes it."""
    model, x = calibrated((4, 6, 8), seed=3)
    return header(integerize(model, x))


def submission(folder: Path, base: Path = SOLUTIONS, variant=None) -> Path:
    """The track's student files of ``base`` in ``folder``, with the buggy ``variant`` planted."""
    for relative in homework.MCU_STUDENT_FILES:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / relative, folder / relative)
    if variant is not None:
        variants.apply(variant, folder)
    return folder


def test_listed_tests_add_up_to_the_facts():
    process = subprocess.run([*RUNNER, "--list", "--homework", "mcu"], cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 0, process.stderr
    points = dict.fromkeys(homework.MCU_PART_POINTS, 0.0)
    for test in json.loads(process.stdout):
        assert TODOS[test["todo"]] == test["part"], test
        points[test["part"]] += test["max_score"]
    assert points == homework.MCU_PART_POINTS and homework.MCU_POINTS == 20.0
    assert set(homework.MCU_PART_NAMES).isdisjoint(homework.PART_NAMES + homework.DEPLOY_PART_NAMES)


@pytest.mark.parametrize("name", variants.mcu_names())
def test_variant_applies_and_compiles(name):
    planted = variants.bug(name)
    assert TODOS[planted.todo] == planted.part
    (relative, text), = variants.variant_files(name).items()
    assert relative in homework.MCU_STUDENT_FILES and text != (SOLUTIONS / relative).read_text()
    compile(text, relative, "exec")


def test_variants_cover_every_part_and_the_guide_lists_them():
    assert {variants.bug(name).part for name in variants.mcu_names()} == set(homework.MCU_PART_NAMES)
    guide = (REPO / "docs" / "MCU.md").read_text().split("## Buggy variants")[1]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", guide, re.MULTILINE)
    assert sorted(rows) == sorted((name, variants.bug(name).part) for name in variants.mcu_names())


def test_the_handout_readme_describes_the_track_from_the_facts():
    from grader.handout import mcu_section
    text = mcu_section()
    assert f"{homework.MCU_POINTS:g} points" in text and "python mcu_train.py" in text
    for part in homework.MCU_PARTS:
        assert f"| {part.name}: {part.summary} | {part.points:g} |" in text
        assert all(f"`{todo}`" in text for todo in part.todos)
    assert text in (ASSIGNMENT / "README.md").read_text()


def test_the_box_stages_every_operation_module_of_the_worker():
    modules = {path.name for path in (REPO / "grader" / "worker").glob("*.py")} - {"cell.py"}
    assert set(box.WORKER_FILES) == modules


# --------------------------------------------------------------------------- the header is data


def test_a_header_reads_back_as_the_numbers_it_was_written_from():
    text = exported()
    layers = parse_header(text)
    assert header(layers) == text and [layer.kind for layer in layers] == ["conv", "conv", "conv", "fc"]


def _grown(text: str) -> str:
    """``text`` with conv1's packed weights declared and written a million times longer."""
    start = text.index("static const uint8_t mcu_w0[")
    end = text.index("};", start)
    return text[:start] + "static const uint8_t mcu_w0[1000000] MCU_FLASH = {\n" + ",\n".join(["    1"] * 10 ** 6) \
        + "\n" + text[end:]


def _set_row(text: str, row: int, field: int, value: str) -> str:
    """``text`` with field ``field`` of row ``row`` of the layer table replaced by ``value``."""
    rows = re.findall(r"^    \{.*\},?$", text, re.M)
    fields = rows[row].strip().strip(",").strip("{}").split(", ")
    fields[field] = value
    return text.replace(rows[row], "    {" + ", ".join(fields) + "}" + ("," if rows[row].endswith(",") else ""))


def _set_first(text: str, name: str, value: str) -> str:
    """``text`` with the first value of the array ``name`` replaced by ``value``."""
    found = re.search(rf"{name}\[\d+\] MCU_FLASH = {{\n    (-?\d+)", text)
    return text[:found.start(1)] + value + text[found.end(1):]


ATTACKS = {
    "include": (lambda t: '#include "/etc/passwd"\n' + t, "line 1 is '#include"),
    "include_inside": (lambda t: t.replace("#ifndef MCU_SIZES_ONLY", '#include "/etc/shadow"\n#ifndef MCU_SIZES_ONLY'),
                       "#include"),
    "asm": (lambda t: t.replace("#endif", 'asm("jmp 0");\n#endif'), "asm("),
    "endless_constructor": (lambda t: t + "__attribute__((constructor)) static void f(void) { for (;;); }\n",
                            "__attribute__"),
    "macro_redefined": (lambda t: t.replace("#define MCU_CLASSES 10", "#define MCU_CLASSES 10\n#define for while"),
                        "#define for"),
    "huge_text": (lambda t: t + " " * (homework.MCU_MAX_HEADER_BYTES + 1), "at most"),
    "huge_array": (_grown, "characters; at most"),
    "declared_longer": (lambda t: t.replace("mcu_w0[16]", "mcu_w0[160000]"), "declares 160000 values"),
    "arena_grown": (lambda t: re.sub(r"#define MCU_ARENA_BYTES \d+", "#define MCU_ARENA_BYTES 60000000", t),
                    "#define MCU_ARENA_BYTES 60000000"),
    "not_ascii": (lambda t: t.replace("Generated", "Gén\u00e9rated"), "not ASCII"),
    "uint8_out_of_range": (lambda t: _set_first(t, "mcu_w0", "256"), "outside the range of uint8_t"),
    "int32_out_of_range": (lambda t: _set_first(t, "mcu_m0", "2147483648"), "outside the range of int32_t"),
    "overflowing_multiplier": (lambda t: _set_first(t, "mcu_m3", "2147483647"), "beyond int32"),
    "shift_too_far": (lambda t: _set_row(t, 0, 7, "200"), "the shift is 200"),
    "shapes_do_not_chain": (lambda t: _set_row(t, 1, 2, "6"), "reads shape (4, 6, 8)"),
    "rows_beyond_uint8": (lambda t: _set_row(t, 0, 2, "300"), "fit the C code's fields"),
    "table_names_other_arrays": (lambda t: t.replace("mcu_w1, mcu_m1, mcu_b1", "mcu_w0, mcu_m0, mcu_b0"),
                                 "row 1 of the layer table"),
    "no_table": (lambda t: t[:t.index("static const mcu_layer")], "no layer table"),
}
"""Hostile headers: each is refused by ``parse_header`` with a message holding the given words."""


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_header_is_refused_with_a_reason_before_any_compiler_sees_it(attack):
    change, words = ATTACKS[attack]
    text = change(exported())
    assert text != exported()
    with pytest.raises(HeaderError) as refused:
        parse_header(text)
    assert words in str(refused.value) and "\n" not in str(refused.value)


# --------------------------------------------------------------------------- grading in the box (heavy)

HOSTILE_BINARY = '''
def _swap_the_header():
    """Replace the provided export's header writer with one that includes a file of the judge's machine."""
    import sys
    export = sys.modules.get("mcu.export")
    if export is not None and not getattr(export, "swapped", False):
        original = export.header
        export.header = lambda layers: '#include "/etc/passwd"\\n' + original(layers)
        export.swapped = True
'''
"""Added to the reference ``mcu/binary.py``; its ``pack_signs`` calls it first (so packing itself is right)."""


def hostile(folder: Path) -> Path:
    """The reference files, with a pack_signs that swaps in a hostile header and a fit_to_budget that never ends."""
    submission(folder)
    binary = folder / "mcu/binary.py"
    text = binary.read_text().replace("    rows, n = signs.shape\n", "    _swap_the_header()\n    rows, n = signs.shape\n")
    binary.write_text(text + HOSTILE_BINARY)
    prune = folder / "mcu/prune.py"
    prune.write_text(prune.read_text().replace("    index = conv_to_shrink(model, board)\n    while index >= 0:\n",
                                               "    while True:\n        pass\n"
                                               "    index = conv_to_shrink(model, board)\n    while index >= 0:\n"))
    return folder


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """The box every run uses, probed once: bubblewrap where it works, as ``grade`` would choose."""
    return box.strongest_level()[0]


def grade(folder: Path, results: Path, *options: str) -> list:
    process = subprocess.run([*RUNNER, str(folder), str(results), "--homework", "mcu", "--isolation", isolation(),
                              *options], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    return json.loads(results.read_text())["tests"]


@pytest.mark.heavy
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not shutil.which("gcc"), reason="no host gcc: the suite compiles the exported header with it")
def test_reference_full_skeleton_zero_variants_and_attacks_lose_their_points(tmp_path):
    jobs = {"reference": (SOLUTIONS, ()), "skeleton": (ASSIGNMENT, ()),
            "hostile": (hostile(tmp_path / "hostile"), ("--timeout", "15"))}
    for name in variants.mcu_names():
        jobs[name] = (submission(tmp_path / name, variant=name), ("--part", variants.bug(name).part))
    results = grade_in_parallel(grade, jobs, tmp_path)
    reference = results.pop("reference")
    assert [t["output"] for t in reference if t["score"] != t["max_score"]] == []
    assert sum(t["score"] for t in reference) == homework.MCU_POINTS
    assert [t["name"] for t in results.pop("skeleton") if t["score"]] == []
    lost = {t["name"].split("::")[1]: t for t in results.pop("hostile") if t["score"] != t["max_score"]}
    assert set(lost) == {"test_exported_header_compiled_with_gcc_predicts_like_the_reference",
                         "test_fit_removes_the_weakest_channel_of_the_peak_until_it_fits"}, sorted(lost)
    assert "it was not compiled" in lost["test_exported_header_compiled_with_gcc_predicts_like_the_reference"]["output"]
    assert "stopped after 15 seconds" in lost["test_fit_removes_the_weakest_channel_of_the_peak_until_it_fits"]["output"]
    kept = [name for name, tests in results.items()
            if all(t["score"] == t["max_score"] for t in tests if t["todo"] == variants.bug(name).todo)]
    assert kept == [], f"variants that lose no points on their TODO: {kept}"
