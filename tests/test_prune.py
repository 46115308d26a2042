"""Magnitude pruning (solutions/net/prune.py) on a small model and on the real AlexNet."""
import pytest
import torch

from net.prune import DEFAULT_PRUNE_RATE
from pruning import DEFAULT_LAYER_KEEP

ALEXNET_PARAMETERS = 20_344_650
ALEXNET_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3"]


def weights(model):
    return {name: module.weight.detach().clone() for name, module in model.prunable_layers()}


def biases(model):
    return {name: module.bias.detach().clone() for name, module in model.prunable_layers()}


def zero_fraction(tensor):
    return (tensor == 0).double().mean().item()


def test_prune_zeroes_exactly_the_weights_below_the_threshold(small_model):
    """`_prune` zeroes |w| < threshold, keeps |w| == threshold and above, leaves the bias, works in place."""
    layer = small_model.conv_b
    with torch.no_grad():
        layer.weight.view(-1)[:4] = torch.tensor([0.5, -0.5, 0.49999, -0.50001])
    before, bias_before = layer.weight.detach().clone(), layer.bias.detach().clone()
    parameter, storage = layer.weight, layer.weight.data_ptr()

    small_model._prune(layer, 0.5)

    expected = torch.where(before.abs() < 0.5, torch.zeros_like(before), before)
    assert torch.equal(layer.weight.data, expected)
    assert layer.weight.view(-1)[:4].tolist() == pytest.approx([0.5, -0.5, 0.0, -0.50001])
    assert torch.equal(layer.bias.data, bias_before)
    assert layer.weight is parameter and layer.weight.data_ptr() == storage
    assert 0 < zero_fraction(layer.weight) < 1


@pytest.mark.parametrize("s", [0.25, 1.0])
def test_prune_by_std_uses_each_layers_own_std(small_model, s):
    """Every conv and fc layer is pruned at s * std of its own weights; biases are untouched."""
    before, bias_before = weights(small_model), biases(small_model)
    small_model.prune_by_std(s)
    for name, module in small_model.prunable_layers():
        w = before[name]
        expected = torch.where(w.abs() < s * w.std(), torch.zeros_like(w), w)
        assert torch.equal(module.weight.data, expected), name
        assert zero_fraction(module.weight) > 0, f"{name} was not pruned"
        assert torch.equal(module.bias.data, bias_before[name]), name


@pytest.mark.parametrize("q", [0.0, 2.5, 30.0, 80.0, 100.0])
def test_prune_by_percentile_keeps_q_percent_of_every_layer(small_model, q):
    """Each conv and fc layer keeps q% of its weights (the handout's rule), the largest in magnitude *of that layer*."""
    before = weights(small_model)
    small_model.prune_by_percentile(q)
    for name, module in small_model.prunable_layers():
        w, after = before[name], module.weight.data
        assert abs((after != 0).sum().item() - q / 100 * w.numel()) <= 1, name
        # Survivors are unchanged and are all at least as large as every pruned weight.
        alive = after != 0
        assert torch.equal(after[alive], w[alive]), name
        if alive.any() and (~alive).any():
            assert w[~alive].abs().max() <= w[alive].abs().min(), name


def test_prune_by_percentile_default_rate(small_model):
    """Without arguments the percentile method keeps DEFAULT_PRUNE_RATE percent of each layer (95: prunes 5%)."""
    assert DEFAULT_PRUNE_RATE == 95.0
    small_model.prune_by_percentile()
    for name, module in small_model.prunable_layers():
        expected = (100 - DEFAULT_PRUNE_RATE) / 100 * module.weight.numel()
        assert abs((module.weight == 0).sum().item() - expected) <= 1, name


def test_prune_by_percentile_with_a_per_layer_mapping(small_model):
    """A mapping keeps each listed layer's own percentage and leaves the others untouched."""
    before = weights(small_model)
    rates = {"conv_a": 30.0, "fc_a": 80.0}
    small_model.prune_by_percentile(rates)
    for name, module in small_model.prunable_layers():
        if name in rates:
            assert abs(1 - zero_fraction(module.weight) - rates[name] / 100) <= 1 / module.weight.numel(), name
        else:
            assert torch.equal(module.weight.data, before[name]), name


@pytest.mark.parametrize("q", [{"conv_z": 50.0}, {"conv_a.weight": 50.0}, -1.0, 100.5, {"fc_a": 120.0},
                               float("nan"), "50", True])
def test_prune_by_percentile_rejects_bad_rates(small_model, q):
    """Unknown layer names and rates outside [0, 100] raise ValueError before anything is pruned."""
    before = weights(small_model)
    with pytest.raises(ValueError):
        small_model.prune_by_percentile(q)
    for name, module in small_model.prunable_layers():
        assert torch.equal(module.weight.data, before[name]), name


def test_alexnet_has_the_specified_parameters(alexnet):
    """AlexNet: 20,344,650 parameters in exactly 16 tensors (8 weights, 8 biases), no buffers."""
    state = alexnet.state_dict()
    assert len(state) == 16
    assert list(state) == [f"{layer}.{kind}" for layer in ALEXNET_LAYERS for kind in ("weight", "bias")]
    assert sum(t.numel() for t in state.values()) == ALEXNET_PARAMETERS
    assert sum(t.numel() * t.element_size() for t in state.values()) == 81_378_600
    assert list(alexnet.buffers()) == []
    assert [name for name, _ in alexnet.prunable_layers()] == ALEXNET_LAYERS
    assert alexnet(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_alexnet_per_layer_percentile_pruning(alexnet):
    """The course's per-layer percentages kept give exactly that density in every AlexNet layer, conv included.

    They are the old recipe's pruning rates translated (conv1 50%, conv2 80%, conv3-5 90%, fc1 96%, fc2 99%
    and fc3 85% pruned), so the default run prunes as much as before.
    """
    assert {name: 100 - keep for name, keep in DEFAULT_LAYER_KEEP.items()} == {
        "conv1": 50, "conv2": 80, "conv3": 90, "conv4": 90, "conv5": 90, "fc1": 96, "fc2": 99, "fc3": 85}
    bias_before = biases(alexnet)
    alexnet.prune_by_percentile(DEFAULT_LAYER_KEEP)
    for name, module in alexnet.prunable_layers():
        n = module.weight.numel()
        assert abs((module.weight != 0).sum().item() - DEFAULT_LAYER_KEEP[name] / 100 * n) <= 1, name
        assert torch.equal(module.bias.data, bias_before[name]), name


def test_alexnet_prune_by_std_covers_conv_layers(alexnet):
    """prune_by_std prunes every AlexNet layer (conv included) at the std of that layer alone."""
    stds = {name: module.weight.std().item() for name, module in alexnet.prunable_layers()}
    assert len({round(s, 6) for s in stds.values()}) > 1, "the test needs layers of different std"
    below = {name: (module.weight.abs() < 0.5 * stds[name]).sum().item()
             for name, module in alexnet.prunable_layers()}
    alexnet.prune_by_std(0.5)
    for name, module in alexnet.prunable_layers():
        assert (module.weight == 0).sum().item() == below[name] > 0, name
