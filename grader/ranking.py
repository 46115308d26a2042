"""Gate, rank and tier: the rules behind the ranking's points.

The gate and the points of each third are facts of the homework
(``grader/homework.py``: ``GATE``, ``RANKING_POINTS``); the figures below are
this term's.

* **Gate.** A model qualifies when its accuracy is strictly above the gate
  (58.00%). The comparison is exact (``correct / total`` as a
  fraction against the gate as written), so 5800/10000 does not pass 58.
* **Rank.** Qualified models are ranked by compression rate, higher first (the deployable-model board,
  ``OnnxEntry``, ranks by bit-operations instead, fewer first, under the same rules).
  The rate is the original model's bytes (81,378,600) over the compressed bytes, so equal rates are equal
  byte counts: the ranking compares the integers and ties are exact. Tied
  models share the best rank of their group and the next rank skips
  ("1, 2, 2, 4").
* **Tier.** With ``n`` qualified models, rank ``r`` earns 10 points when
  ``r <= ceil(n / 3)``, 5 points when ``r <= ceil(2n / 3)``, else 0. When
  ``n`` is not a multiple of three the upper tiers get the extra places
  (n = 4: 2, 1, 1; n = 5: 2, 2, 1; n = 7: 3, 2, 2), one model alone gets 10,
  two get 10 and 5. Because tied models share the best rank, a tie across a
  border lifts the whole group into the better tier.

Everything not qualified (below the gate, invalid, missing) gets 0 points and
is listed after the ranking.
"""
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, List, Optional, Sequence, Union

from grader.homework import GATE, RANKING_POINTS

TOP_POINTS, MIDDLE_POINTS, BOTTOM_POINTS = RANKING_POINTS


def original_bytes() -> int:
    """The homework's model in float32 bytes, computed from the reference model (which needs torch: imported
    only when a rate is asked for)."""
    from grader.reference import original_bytes as computed
    return computed()


@dataclass(frozen=True)
class Entry:
    """One student's measured (or failed) submission, as the ranking sees it."""

    student_id: str
    correct: int = 0
    total: int = 0
    compressed_bytes: int = 0
    problem: str = ""
    """Why the submission could not be measured (empty when it was)."""

    @property
    def accuracy(self) -> float:
        """Percent of the test images classified correctly (0 when not measured)."""
        return 100.0 * self.correct / self.total if self.total else 0.0

    @property
    def rate(self) -> float:
        """Compression rate: original over compressed bytes (0 when not measured)."""
        return original_bytes() / self.compressed_bytes if self.compressed_bytes else 0.0

    @property
    def cost(self) -> int:
        """What the ranking orders by, lower first: the compressed bytes."""
        return self.compressed_bytes


@dataclass(frozen=True)
class OnnxEntry:
    """One student's measured (or failed) ``.onnx`` submission, as the deployable-model ranking sees it."""

    student_id: str
    correct: int = 0
    total: int = 0
    bit_ops: int = 0
    """Bit-operations of one image: MACs x weight bits x activation bits, summed (``grader/bitops.py``)."""
    macs: int = 0
    latency_ratio: Optional[float] = None
    """Median time of one image against the dense reference (shown, never ranked by); None when not measured."""
    fits_uno: str = "n/a"
    problem: str = ""

    accuracy = Entry.accuracy

    @property
    def cost(self) -> int:
        """What the ranking orders by, lower first: the bit-operations."""
        return self.bit_ops


@dataclass(frozen=True)
class Row:
    """One line of the leaderboard."""

    entry: Union[Entry, "OnnxEntry"]
    rank: Optional[int]
    qualified: bool
    points: int
    status: str


def passes_gate(correct: int, total: int, gate: Union[str, float, Fraction]) -> bool:
    """Whether ``correct / total`` (as a percentage) is strictly above ``gate`` percent, computed exactly."""
    return total > 0 and Fraction(100 * correct, total) > Fraction(str(gate))


def tier_points(rank: int, n_qualified: int) -> int:
    """Points for 1-based ``rank`` among ``n_qualified``: 10 up to ceil(n/3), 5 up to ceil(2n/3), else 0."""
    if not 1 <= rank <= n_qualified:
        raise ValueError(f"rank {rank} is not between 1 and {n_qualified}")
    if 3 * (rank - 1) < n_qualified:          # rank <= ceil(n / 3)
        return TOP_POINTS
    if 3 * (rank - 1) < 2 * n_qualified:      # rank <= ceil(2n / 3)
        return MIDDLE_POINTS
    return BOTTOM_POINTS


def competition_ranks(sorted_keys: Sequence) -> List[int]:
    """1-based ranks of already sorted keys, equal keys sharing the best rank ("1, 2, 2, 4")."""
    ranks: List[int] = []
    for position, key in enumerate(sorted_keys):
        ranks.append(ranks[-1] if position and key == sorted_keys[position - 1] else position + 1)
    return ranks


def rank_entries(entries: Iterable[Union[Entry, OnnxEntry]], gate: Union[str, float, Fraction] = GATE) -> List[Row]:
    """The leaderboard: ranked qualified entries first, then below-gate ones (lowest cost first: the best rate, or
    the fewest bit-operations), then failures."""
    entries = list(entries)
    measured = [e for e in entries if not e.problem]
    qualified = sorted((e for e in measured if passes_gate(e.correct, e.total, gate)),
                       key=lambda e: (e.cost, e.student_id))
    below = sorted((e for e in measured if not passes_gate(e.correct, e.total, gate)),
                   key=lambda e: (e.cost, e.student_id))
    failed = sorted((e for e in entries if e.problem), key=lambda e: e.student_id)

    rows = []
    ranks = competition_ranks([e.cost for e in qualified])
    for entry, rank in zip(qualified, ranks):
        rows.append(Row(entry, rank, True, tier_points(rank, len(qualified)), "ranked"))
    for entry in below:
        rows.append(Row(entry, None, False, 0,
                        f"below the gate: accuracy {entry.accuracy:.2f}% is not above {gate}%"))
    rows.extend(Row(entry, None, False, 0, entry.problem) for entry in failed)
    return rows
