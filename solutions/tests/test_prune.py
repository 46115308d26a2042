"""Sanity checks of net/prune.py. The grader runs more, and stricter, hidden tests."""
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


def test_prune_by_percentile_prunes_about_q_percent_of_each_layer():
    model = TinyNet()
    model.prune_by_percentile(50)
    for name in ("conv1", "fc1"):
        weight = getattr(model, name).weight
        share = (weight == 0).float().mean().item()
        assert 0.4 <= share <= 0.6, f"prune_by_percentile(50) set {share:.0%} of {name} to 0, expected about 50%"
