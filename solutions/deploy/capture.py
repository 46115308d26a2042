"""Graph capture: the model's forward pass as one graph, and a check that it computes exactly the same.

A deployed model is rarely the Python class that trained it: runtimes,
compilers and exporters (the ONNX exporter of ``deploy/onnx_int8.py``
included) start from a *captured graph*, a list of tensor operations traced
through ``forward`` once. ``torch.export.export`` records every operation
(convolutions, ReLUs, pooling, the flatten, the Linears) with the weights as
inputs of the graph, and refuses Python it cannot trace instead of guessing.
The batch size can stay free: ``dynamic_shapes`` names dimension 0 a
symbol, so the graph runs on any batch, not only the example's.

A graph that is "close" to the model is not good enough to ship: a capture
must compute *exactly* what the model computes, bit for bit, on the same
inputs (the same operations in the same order on the same CPU give the same
floats). So the check is ``torch.equal``, not a tolerance: a tolerance would
call a graph equal whose weights or operations changed a little. The largest
absolute difference says how far apart they are when they are not equal.
(TorchScript, the older way to capture, is deprecated in torch 2.14: not used here.)
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn

BATCH = torch.export.Dim("batch")
"""The symbol that keeps the batch dimension free in the captured graph."""


def capture(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model``'s forward pass (eval mode) captured by ``torch.export`` on ``example``, with a free batch size."""
    # TODO: return torch.export.export(model.eval(), (example,),
    #       dynamic_shapes=({0: BATCH},)): dimension 0 of the one input is the
    #       batch, free, so the captured graph runs on any number of images.
    # BEGIN SOLUTION
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},))
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/capture.py: capture")


@torch.no_grad()
def check_equivalent(model: nn.Module, captured: nn.Module, inputs: Sequence[torch.Tensor]) -> Dict[str, object]:
    """Whether ``captured`` (a captured graph as a module: ``program.module()``) computes exactly what ``model``
    does on every batch of ``inputs``: ``{"equal": bool, "max_abs_diff": float}``."""
    # TODO: put `model` in eval mode; for every batch x of `inputs`, compute
    #       a = model(x) and b = captured(x) (the SAME x for both); the result
    #       is "equal": True only if torch.equal(a, b) holds for every batch
    #       (exact: no tolerance), and "max_abs_diff": the largest
    #       float((a - b).abs().max()) over the batches (0.0 when all are equal).
    # BEGIN SOLUTION
    model.eval()
    equal, largest = True, 0.0
    for x in inputs:
        a, b = model(x), captured(x)
        equal = equal and torch.equal(a, b)
        largest = max(largest, float((a - b).abs().max()))
    return {"equal": equal, "max_abs_diff": largest}
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/capture.py: check_equivalent")
