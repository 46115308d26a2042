"""Low rank: replace a big layer by two thin ones with a truncated SVD.

A Linear layer computes ``W x + b`` with ``W`` of shape ``(out, in)``. Its
singular value decomposition ``W = U diag(s) Vh`` sorts the directions of
``W`` by how much they matter (``s`` decreases). Keeping the first ``r``
gives ``W_r = U[:, :r] diag(s[:r]) Vh[:r]``, the best rank-``r``
approximation: no other rank-``r`` matrix is closer in the Frobenius norm,
and the error is ``sqrt(s[r]**2 + s[r+1]**2 + ...)`` (Eckart and Young, 1936).
``W_r x`` is two thin products, ``(U_r diag(s_r)) (Vh_r x)``: ``r * (in + out)``
multiplications instead of ``in * out``, a saving whenever ``r`` is small.

A Conv2d is the same idea on its weight seen as a matrix: ``(out, in * k * k)``
rows are the filters. The right factor becomes a ``k x k`` conv with ``r``
filters (same stride and padding), the left one a ``1 x 1`` conv from ``r``
channels to ``out`` that also adds the bias.

The rank is given directly (an ``int``) or by the *energy* to keep (a
``float`` in (0, 1]): the smallest ``r`` with
``sum(s[:r]**2) >= energy * sum(s**2)``.
"""
from typing import Dict, Mapping, Tuple, Union

import torch
import torch.nn as nn

Rank = Union[int, float]
"""A rank (``int`` >= 1) or a fraction of the energy to keep (``float`` in (0, 1])."""


def truncated_svd(matrix: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(left, right)`` of shapes ``(m, rank)`` and ``(rank, n)`` whose product is the best rank-``rank``
    approximation of ``matrix`` (shape ``(m, n)``). Each factor carries ``sqrt(s)``, so both are of similar size."""
    # TODO: 1. `U, s, Vh = torch.linalg.svd(matrix, full_matrices=False)` (s is sorted, largest first);
    #       2. keep the first `rank` singular values and their vectors: the first `rank`
    #          COLUMNS of U and the first `rank` ROWS of Vh;
    #       3. return left = U_r * sqrt(s_r) (scaling each column) and
    #          right = sqrt(s_r)[:, None] * Vh_r (scaling each row).
    # BEGIN SOLUTION
    U, s, Vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return U[:, :rank] * root, root[:, None] * Vh[:rank]
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/lowrank.py: truncated_svd")


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank ``r`` whose first ``r`` singular values hold at least ``energy`` of ``sum(s**2)``."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"the energy to keep must be in (0, 1], got {energy!r}")
    # TODO: with `kept = cumsum(s**2) / sum(s**2)` (the energy of ranks 1, 2, ...),
    #       return 1 + the number of entries of `kept` below `energy`
    #       (allow a tolerance of 1e-6 for rounding), at most len(s).
    # BEGIN SOLUTION
    squares = singular_values.double() ** 2
    kept = torch.cumsum(squares, 0) / squares.sum()
    return min(int((kept < energy - 1e-6).sum().item()) + 1, singular_values.numel())
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/lowrank.py: rank_for_energy")


def chosen_rank(matrix: torch.Tensor, rank: Rank) -> int:
    """``rank`` itself (capped at the largest possible rank) or the rank for that energy."""
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise ValueError(f"a rank is an int >= 1 or an energy fraction in (0, 1], got {rank!r}")
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f"a rank must be at least 1, got {rank}")
        return min(rank, min(matrix.shape))
    return rank_for_energy(torch.linalg.svdvals(matrix), rank)


def factorize_linear(layer: nn.Linear, rank: Rank) -> nn.Sequential:
    """Two Linears, ``in -> r`` (no bias) then ``r -> out`` (with the layer's bias), computing ``W_r x + b``."""
    weight = layer.weight.detach()
    r = chosen_rank(weight, rank)
    left, right = truncated_svd(weight, r)
    first = nn.Linear(layer.in_features, r, bias=False)
    second = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
    first.weight.data, second.weight.data = right.contiguous(), left.contiguous()
    if layer.bias is not None:
        second.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, second).to(weight.device)


def factorize_conv(layer: nn.Conv2d, rank: Rank) -> nn.Sequential:
    """A ``k x k`` conv with ``r`` filters (the layer's stride and padding, no bias), then a ``1 x 1`` conv to
    ``out`` channels with the layer's bias."""
    if layer.groups != 1:
        raise ValueError("only convolutions with groups=1 can be factorised this way")
    out, channels, height, width = layer.weight.shape
    # TODO: 1. view the weight as the matrix of its filters, one row per output
    #          channel: `layer.weight.detach().reshape(out, channels * height * width)`;
    #       2. r = chosen_rank(matrix, rank); left, right = truncated_svd(matrix, r);
    #       3. first = nn.Conv2d(channels, r, (height, width), stride=layer.stride,
    #          padding=layer.padding, dilation=layer.dilation, bias=False) with weight
    #          `right` reshaped to (r, channels, height, width);
    #       4. second = nn.Conv2d(r, out, 1, bias=layer.bias is not None) with weight
    #          `left` reshaped to (out, r, 1, 1) and the layer's bias (a copy);
    #       5. return nn.Sequential(first, second) on the layer's device.
    # BEGIN SOLUTION
    matrix = layer.weight.detach().reshape(out, channels * height * width)
    r = chosen_rank(matrix, rank)
    left, right = truncated_svd(matrix, r)
    first = nn.Conv2d(channels, r, (height, width), stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, bias=False)
    second = nn.Conv2d(r, out, 1, bias=layer.bias is not None)
    first.weight.data = right.reshape(r, channels, height, width).contiguous()
    second.weight.data = left.reshape(out, r, 1, 1).contiguous()
    if second.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)
    # END SOLUTION
    # STUB: raise NotImplementedError("TODO deploy/lowrank.py: factorize_conv")


def low_rank(model: nn.Module, ranks: Mapping[str, Rank]) -> Dict[str, int]:
    """Replace each layer named in ``ranks`` by its factorisation, in place; return ``{layer: rank used}``."""
    result = {}
    for name, rank in ranks.items():
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            setattr(model, name, factorize_linear(layer, rank))
        elif isinstance(layer, nn.Conv2d):
            setattr(model, name, factorize_conv(layer, rank))
        else:
            raise ValueError(f"{name!r} is not a conv or fc layer of the model")
        result[name] = getattr(model, name)[0].weight.shape[0]
    return result
