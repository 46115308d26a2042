"""Gate, ranks, ties and tiers of the leaderboard (pure logic, no models)."""
import pytest

from grader.ranking import Entry, competition_ranks, passes_gate, rank_entries, tier_points


def entries_with_bytes(sizes, correct=9000):
    """Qualified entries s0, s1, ... with the given compressed sizes (smaller is better)."""
    return [Entry(f"s{i}", correct, 10000, size) for i, size in enumerate(sizes)]


def points_by_student(rows):
    return {row.entry.student_id: row.points for row in rows}


@pytest.mark.parametrize("n, tiers", [
    (1, [10]),
    (2, [10, 5]),
    (3, [10, 5, 0]),
    (4, [10, 10, 5, 0]),
    (5, [10, 10, 5, 5, 0]),
    (6, [10, 10, 5, 5, 0, 0]),
    (7, [10, 10, 10, 5, 5, 0, 0]),
])
def test_tiers_without_ties(n, tiers):
    rows = rank_entries(entries_with_bytes(range(1000, 1000 + n)))
    assert [row.rank for row in rows] == list(range(1, n + 1))
    assert [row.points for row in rows] == tiers


def test_tiers_for_a_class_of_100():
    rows = rank_entries(entries_with_bytes(range(1000, 1100)))
    points = [row.points for row in rows]
    assert points.count(10) == 34 and points.count(5) == 33 and points.count(0) == 33
    assert points == sorted(points, reverse=True)


def test_tier_points_matches_the_ceiling_rule():
    import math
    for n in range(1, 60):
        for rank in range(1, n + 1):
            expected = 10 if rank <= math.ceil(n / 3) else 5 if rank <= math.ceil(2 * n / 3) else 0
            assert tier_points(rank, n) == expected
    with pytest.raises(ValueError):
        tier_points(0, 3)


def test_higher_rate_ranks_first():
    rows = rank_entries([Entry("small-rate", 9000, 10000, 900_000), Entry("big-rate", 9000, 10000, 400_000)])
    assert [row.entry.student_id for row in rows] == ["big-rate", "small-rate"]


def test_ties_share_rank_and_the_next_rank_skips():
    assert competition_ranks([5, 7, 7, 9, 9, 9, 10]) == [1, 2, 2, 4, 4, 4, 7]
    rows = rank_entries(entries_with_bytes([100, 200, 200, 300]))
    assert [row.rank for row in rows] == [1, 2, 2, 4]


def test_a_tie_across_the_top_border_lifts_the_whole_group():
    # n = 3: ceil(3/3) = 1 place at 10 points, but s1 ties s0 at rank 1.
    rows = rank_entries(entries_with_bytes([100, 100, 300]))
    assert points_by_student(rows) == {"s0": 10, "s1": 10, "s2": 0}


def test_a_tie_across_the_bottom_border_lifts_the_whole_group():
    # n = 5: ranks 1-2 get 10, 3-4 get 5, 5 gets 0; s3 and s4 tie at rank 4.
    rows = rank_entries(entries_with_bytes([100, 200, 300, 400, 400]))
    assert points_by_student(rows) == {"s0": 10, "s1": 10, "s2": 5, "s3": 5, "s4": 5}


def test_a_tie_straddling_two_borders():
    # n = 7, everyone from rank 2 on tied: all share rank 2, which is a top-tier rank.
    rows = rank_entries(entries_with_bytes([100] + [500] * 6))
    assert [row.rank for row in rows] == [1] + [2] * 6
    assert all(row.points == 10 for row in rows)


def test_gate_is_strict_and_exact():
    assert not passes_gate(5800, 10000, "58.00")
    assert passes_gate(5801, 10000, "58.00")
    assert not passes_gate(5800, 10000, 58.0)
    assert passes_gate(29, 50, "57.99")       # 58% of 50 images
    assert not passes_gate(0, 0, "0")


def test_unqualified_and_failed_are_listed_after_the_ranking_with_zero_points():
    rows = rank_entries([
        Entry("exactly-gate", 5800, 10000, 100),           # the best rate, but not above the gate
        Entry("ok", 5900, 10000, 500_000),
        Entry("broken", problem="invalid: NaN"),
        Entry("absent", problem="missing: no .ptmodel"),
    ])
    assert [row.entry.student_id for row in rows] == ["ok", "exactly-gate", "absent", "broken"]
    assert [row.rank for row in rows] == [1, None, None, None]
    assert [row.points for row in rows] == [10, 0, 0, 0]
    assert rows[1].status.startswith("below the gate: accuracy 58.00%")
    assert rows[3].status == "invalid: NaN"
    assert [row.qualified for row in rows] == [True, False, False, False]


def test_the_unqualified_do_not_count_for_the_tiers():
    rows = rank_entries(entries_with_bytes([100, 200]) + [Entry("low", 100, 10000, 50)])
    assert points_by_student(rows) == {"s0": 10, "s1": 5, "low": 0}


def test_the_gate_is_an_option():
    entries = [Entry("a", 3000, 10000, 100), Entry("b", 2000, 10000, 50)]
    assert [row.qualified for row in rank_entries(entries, gate="25")] == [True, False]
    assert [row.entry.student_id for row in rank_entries(entries, gate="10")] == ["b", "a"]
