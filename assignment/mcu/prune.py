"""Structured pruning to a budget: remove whole channels until the network fits the board.

On a microcontroller the binding limit is usually RAM, and RAM is set by
one layer: the one whose input + output pair is largest (``mcu/budget.py``).
Removing weights one by one (Part 1's pruning) saves flash but not a byte of
RAM, because the activations keep their shape. Removing an output *channel*
of a convolution shrinks its stored output, the next layer's input and both
layers' weights, and the network stays dense, so the C code needs no index
arrays.

The rule here is greedy: while the estimate does not fit, shrink the largest
tensor that can shrink and that makes the problem (for SRAM, the biggest
conv output in the peak pair; for flash, the conv with the most weight
bytes), dropping its least important channel. Fine-tune afterwards: the
other channels take over the work of the removed ones.
"""
from typing import List, Tuple

from homework import Board

from .budget import check
from .model import TinyNet


def conv_to_shrink(model: TinyNet, board: Board) -> int:
    """The index of the conv whose output channel should go next, or -1 when the estimate already fits."""
    budget = check(model.shapes(), board)
    if budget.fits:
        return -1
    layers = model.shapes()
    convs = range(len(model.convs))
    if not budget.fits_sram:
        peak = next(i for i, layer in enumerate(layers) if layer.name == budget.peak_layer)
        # conv i's output is stored as layer i's output and layer i + 1's input
        candidates = [i for i in (peak - 1, peak) if i in convs]
        return max(candidates, key=lambda i: layers[i].out_bytes)
    return max(convs, key=lambda i: layers[i].packed_weight_bytes)


def fit_to_budget(model: TinyNet, board: Board) -> List[Tuple[str, int]]:
    """Remove channels of ``model`` in place until ``check(model.shapes(), board).fits``.

    Returns what was removed, in order, as ``(layer name, channel index at the time of removal)``.
    Raises ``ValueError`` (from ``remove_channel``) when a layer would lose its last channel.
    """
    removed: List[Tuple[str, int]] = []
    # TODO: repeat until `conv_to_shrink(model, board)` returns -1:
    #       1. index = conv_to_shrink(model, board);
    #       2. channel = the index of the smallest value of `model.channel_importance(index)`
    #          (the first one on ties: `int(torch.argmin(...))`);
    #       3. model.remove_channel(index, channel) and append (f"conv{index + 1}", channel) to `removed`.
    pass
    return removed
