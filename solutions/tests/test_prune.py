"""Sanity checks of net/prune.py. The grader runs more, and stricter, hidden tests."""
import pytest
import torch
import torch.nn as nn

from net.prune import PruningModule


class TinyNet(PruningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 3, kernel_size=3)
        self.fc1 = nn.Linear(6, 5)


def test_prune_zeroes_only_the_small_weights():
    model = TinyNet()
    row = [0.1, -0.5, 0.3, -0.05, 0.2, -0.2]
    model.fc1.weight.data = torch.tensor([row] * 5)
    bias = model.fc1.bias.detach().clone()
    model._prune(model.fc1, 0.2)
    expected = torch.tensor([0.0, -0.5, 0.3, 0.0, 0.2, -0.2])
    assert torch.equal(model.fc1.weight[0], expected), \
        f"with threshold 0.2, {row} should become {expected.tolist()} (only |w| < 0.2 goes)"
    assert torch.equal(model.fc1.bias, bias), "_prune must not change the bias"


def test_prune_by_std_prunes_conv_and_fc_layers():
    model = TinyNet()
    model.prune_by_std(0.5)
    for name in ("conv1", "fc1"):
        assert (getattr(model, name).weight == 0).any(), f"prune_by_std(0.5) pruned nothing in {name}"


@pytest.mark.parametrize("q", [30, 80])
def test_prune_by_percentile_keeps_q_percent_of_each_layer(q):
    """q is the percentage of weights KEPT: the threshold is the (100 - q)th percentile of |W|."""
    model = TinyNet()
    model.prune_by_percentile(q)
    for name in ("conv1", "fc1"):
        weight = getattr(model, name).weight
        kept = (weight != 0).float().mean().item()
        assert abs(kept - q / 100) <= 0.05, (
            f"prune_by_percentile({q}) kept {kept:.0%} of {name}, expected about {q}% "
            f"(q is the percentage kept; did you prune {q}% instead?)")


def test_prune_by_percentile_keeps_the_largest_weights():
    model = TinyNet()
    before = model.fc1.weight.detach().clone()
    model.prune_by_percentile({"fc1": 30})
    alive = model.fc1.weight != 0
    assert torch.equal(model.fc1.weight[alive], before[alive]), "kept weights must not change"
    assert before[~alive].abs().max() <= before[alive].abs().min(), "the smallest |w| must go, the largest stay"
    assert (model.conv1.weight != 0).all(), "a layer missing from the mapping must not be pruned"
