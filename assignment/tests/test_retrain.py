"""Sanity checks of the retraining helpers in pruning.py. The grader runs more, hidden tests."""
import torch
import torch.nn as nn

from pruning import pruning_masks, zero_pruned_gradients, zero_pruned_weights


def pruned_layer() -> nn.Linear:
    layer = nn.Linear(3, 2)
    layer.weight.data = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.0, 0.0]])
    return layer


def test_zero_pruned_gradients():
    layer = pruned_layer()
    masks = pruning_masks(layer)
    layer.weight.grad = torch.ones(2, 3)
    layer.bias.grad = torch.ones(2)
    zero_pruned_gradients(layer, masks)
    assert layer.weight.grad.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]], \
        "only the gradients of pruned (zero) weights become 0"
    assert layer.bias.grad.tolist() == [1.0, 1.0], "bias gradients are never zeroed"


def test_zero_pruned_weights():
    layer = pruned_layer()
    masks = pruning_masks(layer)
    layer.weight.data += 0.5  # as if an optimizer step had moved every weight
    zero_pruned_weights(layer, masks)
    assert layer.weight.tolist() == [[0.0, 1.5, -1.5], [3.5, 0.0, 0.0]], \
        "pruned weights go back to 0, the others keep their new values"
