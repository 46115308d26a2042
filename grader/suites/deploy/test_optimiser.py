"""The optimiser's decision (deploy/optimiser.py): constraints, each target's ranking, the choice (6 points).

Every case is a handful of made-up measured rows whose right answer follows
from the handout's rules, so no test measures anything.
"""
import math

import pytest

from grader.suites.common import fail_if

pytestmark = pytest.mark.part("optimiser")

FILE = "deploy/optimiser.py"
NO_LIMITS = {"max_accuracy_drop": None, "max_bytes": None, "max_latency_ms": None}


def row(name, accuracy, size, ratio, ms=None):
    return {"name": name, "accuracy": accuracy, "bytes": size, "latency_ratio": ratio,
            "latency_ms": 20.0 * ratio if ms is None else ms}


REFERENCE = row("reference", 75.0, 80_000_000, 1.0)


def broken_problems(student, cases):
    answer, _ = student.deploy("broken_constraints", cases=[
        {"row": r, "reference": reference, "constraints": {**NO_LIMITS, **limits}}
        for r, reference, limits, _ in cases])
    got = answer.get("broken", [])
    return [f"{r['name']} against {limits}: expected {want}, got {answer_!r}"
            for (r, _, limits, want), answer_ in zip(cases, got + [None] * (len(cases) - len(got)))
            if answer_ != want]


@pytest.mark.points(1, todo=f"{FILE}: broken_constraints")
def test_limits_are_inclusive_and_named_in_order(student):
    """Each constraint is named when passed, in the order of CONSTRAINTS; a row exactly at a limit meets it."""
    all_three = {"max_accuracy_drop": 3.0, "max_bytes": 1_000_000, "max_latency_ms": 2.0}
    cases = [(row("at_every_limit", 72.0, 1_000_000, 0.1, ms=2.0), REFERENCE, all_three, []),
             (row("past_every_limit", 71.5, 1_000_001, 0.1, ms=2.5), REFERENCE, all_three,
              ["max_accuracy_drop", "max_bytes", "max_latency_ms"]),
             (row("too_slow", 74.0, 10, 0.2, ms=4.0), REFERENCE, all_three, ["max_latency_ms"]),
             (row("too_big", 74.0, 2_000_000, 0.05, ms=1.0), REFERENCE, all_three, ["max_bytes"]),
             (row("anything_goes", 1.0, 10 ** 12, 90.0), REFERENCE, {}, [])]
    fail_if(broken_problems(student, cases), "broken_constraints(row, reference, constraints):")


@pytest.mark.points(1, todo=f"{FILE}: broken_constraints")
def test_the_drop_is_measured_from_the_reference(student):
    """drop = reference accuracy - row accuracy: a more accurate row never breaks max_accuracy_drop."""
    limit = {"max_accuracy_drop": 1.0}
    cases = [(row("better", 80.0, 5, 0.5), REFERENCE, limit, []),
             (row("much_worse", 60.0, 5, 0.5), REFERENCE, limit, ["max_accuracy_drop"]),
             (row("same_row", 60.0, 5, 0.5), row("weak_reference", 60.5, 9, 1.0), limit, []),
             (row("zero_allowed", 75.0, 5, 0.5), REFERENCE, {"max_accuracy_drop": 0.0}, [])]
    fail_if(broken_problems(student, cases), "broken_constraints(row, reference, constraints):")


RANKED = [REFERENCE, row("fast", 70.0, 20_000_000, 0.05), row("tiny", 71.0, 1_000_000, 0.5),
          row("tiny_sharp", 72.0, 1_000_000, 0.5), row("sharp", 76.0, 80_000_000, 1.2),
          row("fast_twin", 70.0, 20_000_000, 0.05)]
WANTED_ORDERS = {  # from the docstring's rules; names break what is left
    "speed": ["fast", "fast_twin", "tiny_sharp", "tiny", "reference", "sharp"],
    "size": ["tiny_sharp", "tiny", "fast", "fast_twin", "sharp", "reference"],
    "accuracy": ["sharp", "reference", "tiny_sharp", "tiny", "fast", "fast_twin"],
}


def order_problems(student, rows, orders):
    problems = []
    for target, want in orders.items():
        answer, _ = student.deploy("ranking_order", rows=rows, target=target)
        if answer.get("order") != want:
            problems.append(f"target {target}: expected the order {want}, got {answer.get('order')}")
    return problems


@pytest.mark.points(1, todo=f"{FILE}: ranking_key")
def test_speed_size_and_accuracy_rank_by_their_measure_then_the_ties(student):
    """speed: latency ratio, accuracy, bytes; size: bytes, accuracy, ratio; accuracy: accuracy, ratio, bytes;
    an unknown target raises ValueError."""
    problems = order_problems(student, RANKED, WANTED_ORDERS)
    answer, _ = student.deploy("ranking_key_refuses", row=REFERENCE, target="cheapest")
    if not answer.get("raised"):
        problems.append(f"ranking_key(row, reference, 'cheapest') should raise ValueError: it {answer.get('message')}")
    fail_if(problems, "sorting rows by (ranking_key(row, rows[0], target), name):")


@pytest.mark.points(1, todo=f"{FILE}: ranking_key")
def test_balanced_is_the_geometric_mean_of_the_two_ratios(student):
    """balanced: sqrt(latency ratio * bytes ratio), then accuracy."""
    rows = [REFERENCE, row("lopsided", 74.0, 72_000_000, 0.01), row("even", 74.0, 24_000_000, 0.3),
            row("even_sharper", 74.5, 24_000_000, 0.3), row("quarter_each", 73.0, 20_000_000, 0.25),
            row("sixteenth_speed", 73.5, 80_000_000, 0.0625)]
    keys = {r["name"]: (math.sqrt(r["latency_ratio"] * r["bytes"] / REFERENCE["bytes"]), -r["accuracy"], r["name"])
            for r in rows}
    want = sorted(keys, key=keys.get)  # lopsided 0.095, then the 0.25s by accuracy, then the 0.3s, then 1.0
    fail_if(order_problems(student, rows, {"balanced": want}),
            "sorting rows by (ranking_key(row, rows[0], 'balanced'), name):")


CHOICE_ROWS = [REFERENCE, row("fastest_but_inaccurate", 60.0, 1_000, 0.01), row("b_fast", 74.0, 9_000, 0.1),
               row("a_fast", 74.0, 9_000, 0.1), row("big_and_quick", 73.0, 50_000_000, 0.02),
               row("small_but_slow", 74.0, 500, 2.0)]


def choice_problems(student, cases):
    problems = []
    for rows, target, limits, want in cases:
        answer, _ = student.deploy("choose", rows=rows, target=target, constraints={**NO_LIMITS, **limits})
        if answer.get("chosen") != want:
            problems.append(f"target {target}, {limits or 'no limits'}, rows {[r['name'] for r in rows]}: "
                            f"expected {want!r}, got {answer.get('chosen')!r}")
    return problems


@pytest.mark.points(1, todo=f"{FILE}: choose")
def test_choose_keeps_to_the_constraints(student):
    """Only rows that break no constraint can be chosen; with none left the answer is None."""
    cases = [(CHOICE_ROWS, "speed", {}, "fastest_but_inaccurate"),
             (CHOICE_ROWS, "size", {"max_latency_ms": 1.0}, "fastest_but_inaccurate"),
             (CHOICE_ROWS, "speed", {"max_accuracy_drop": 3.0}, "big_and_quick"),
             (CHOICE_ROWS, "size", {"max_bytes": 100}, None)]
    fail_if(choice_problems(student, cases), "choose(rows, target, constraints):")


@pytest.mark.points(1, todo=f"{FILE}: choose")
def test_choose_measures_from_rows_0_and_breaks_ties_by_name(student):
    """The drop is from rows[0] even when another row is more accurate; tied keys go to the first name."""
    sharper = row("sharper_than_the_reference", 80.0, 80_000_000, 1.5)
    cases = [(CHOICE_ROWS + [sharper], "speed", {"max_accuracy_drop": 1.5}, "a_fast"),
             ([REFERENCE, CHOICE_ROWS[2], CHOICE_ROWS[3]], "speed", {"max_accuracy_drop": 3.0}, "a_fast"),
             ([REFERENCE, CHOICE_ROWS[2], CHOICE_ROWS[3]], "size", {}, "a_fast")]
    fail_if(choice_problems(student, cases), "choose(rows, target, constraints):")
