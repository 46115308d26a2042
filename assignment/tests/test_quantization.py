"""Sanity check of the conv branch of net/quantization.py. The grader runs more, hidden tests."""
import torch
import torch.nn as nn

from net.quantization import apply_weight_sharing


def test_conv_layer_keeps_at_most_2_to_the_bits_values():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, kernel_size=3))
    weight = conv[0].weight.data
    weight[weight.abs() < 0.05] = 0.0
    zeros = weight == 0
    apply_weight_sharing(conv, bits=2)
    after = conv[0].weight.data
    distinct = after[after != 0].unique().numel()
    assert distinct <= 4, f"after 2-bit sharing a conv layer may hold at most 4 distinct non-zero values, found {distinct}"
    assert torch.equal(after == 0, zeros), "zero weights stay zero and non-zero weights stay non-zero"
