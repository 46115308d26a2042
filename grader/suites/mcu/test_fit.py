"""Pruning to a budget (mcu/prune.py): fit_to_budget removes what the reference removes, in order (3 points)."""
import copy

import pytest

from grader.homework import MCU_BOARDS
from grader.suites.mcu.common import network, state_arrays

pytestmark = pytest.mark.part("fit")

CASES = (((20, 8), 2024), ((32, 48), 2025))
"""Two networks over the UNO's SRAM: the peak is conv1's output in the first, conv2's in the second."""


@pytest.mark.points(3, todo="mcu/prune.py: fit_to_budget")
def test_fit_removes_the_weakest_channel_of_the_peak_until_it_fits(student, reference):
    """fit_to_budget removes, one at a time, the least important channel of the conv conv_to_shrink names, until
    the estimate fits the UNO, exactly as the reference does."""
    fit_to_budget = reference("mcu/prune.py").fit_to_budget
    for channels, seed in CASES:
        model = network(reference, channels, seed, gains=(0.2, 2.0), calibrate=False)
        answer, _ = student.mcu("fit", state_arrays(model), f"fit_to_budget on a {channels} network",
                                channels=list(channels), board="uno")
        removed, left = answer.get("removed") or [], answer.get("channels")
        pruned = copy.deepcopy(model)
        wanted = [[name, channel] for name, channel in fit_to_budget(pruned, MCU_BOARDS["uno"])]
        if removed != wanted or left != pruned.channels:
            raise AssertionError(
                f"fit_to_budget on a {list(channels)} network: channels {left!r:.100} after removing {len(removed)} "
                f"channels; expected {pruned.channels} after removing {len(wanted)}, the first ones "
                f"{wanted[:3]} (the weakest channel of the conv conv_to_shrink names, one at a time, until the "
                "estimate fits; fit_to_budget uses your flash_bytes and sram_bytes, so fix those first if they fail)")
