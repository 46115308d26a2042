"""k-means weight sharing (solutions/net/quantization.py)."""
import copy

import numpy as np
import pytest
import torch

from net.quantization import apply_weight_sharing


@pytest.fixture
def pruned_model(small_model):
    small_model.prune_by_percentile(30.0)
    return small_model


def layers(model):
    return dict(model.prunable_layers())


def check_shared_layer(original, shared, bits):
    """The properties weight sharing promises for one layer (original and shared weight tensors)."""
    original, shared = original.numpy(), shared.numpy()
    assert shared.shape == original.shape and shared.dtype == original.dtype
    # zeros stay zero, non-zeros stay non-zero, at the same indices
    assert np.array_equal(shared == 0, original == 0)
    nonzero = original != 0
    values = np.unique(shared[nonzero])
    assert values.size <= 2 ** bits
    if values.size == 0:
        return
    # every shared value lies within the range of the layer's weights ...
    assert original[nonzero].min() <= values.min() and values.max() <= original[nonzero].max()
    # ... and each weight got the centroid nearest to it (the k-means assignment)
    distance = np.abs(original[nonzero] - shared[nonzero])
    nearest = np.abs(original[nonzero][:, None] - values[None, :]).min(axis=1)
    spread = float(np.ptp(original[nonzero])) or 1.0
    assert np.all(distance <= nearest + 1e-6 * spread)


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_weight_sharing_properties(pruned_model, bits):
    """At most 2**bits values per conv/fc layer, zeros kept, indices kept, nearest centroids, biases untouched."""
    before = copy.deepcopy(pruned_model)
    apply_weight_sharing(pruned_model, bits=bits)
    for name, module in layers(pruned_model).items():
        old = layers(before)[name]
        check_shared_layer(old.weight.data, module.weight.data, bits)
        assert torch.equal(module.bias.data, old.bias.data), name
        assert len(np.unique(module.weight.data.numpy())) < len(np.unique(old.weight.data.numpy())), name


def test_weight_sharing_is_deterministic(pruned_model):
    """Two runs on the same model give bit-identical weights (linear initialisation, no random restarts)."""
    first, second = pruned_model, copy.deepcopy(pruned_model)
    apply_weight_sharing(first, bits=4)
    apply_weight_sharing(second, bits=4)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_weight_sharing_with_per_layer_bits(pruned_model):
    """A {layer: bits} mapping shares each listed layer at its width and leaves the others unchanged."""
    before = copy.deepcopy(pruned_model)
    bits = {"conv_b": 2, "fc_a": 3}
    apply_weight_sharing(pruned_model, bits=bits)
    for name, module in layers(pruned_model).items():
        old = layers(before)[name].weight.data
        if name in bits:
            check_shared_layer(old, module.weight.data, bits[name])
            assert len(np.unique(module.weight.data[old != 0].numpy())) == 2 ** bits[name], name
        else:
            assert torch.equal(module.weight.data, old), name


@pytest.mark.parametrize("layer", ["conv_b", "fc_a"])
@pytest.mark.parametrize("distinct", [1, 3])
def test_layer_with_fewer_values_than_clusters_is_unchanged(pruned_model, layer, distinct):
    """A layer that already holds fewer than 2**bits distinct non-zero values keeps them exactly."""
    weight = layers(pruned_model)[layer].weight.data
    palette = torch.tensor([-0.75, 0.25, 1.5])[:distinct]
    choice = torch.randint(0, distinct, weight.shape, generator=torch.Generator().manual_seed(0))
    weight.copy_(torch.where(weight != 0, palette[choice], torch.zeros(())))
    expected = weight.clone()
    apply_weight_sharing(pruned_model, bits=5)
    assert torch.equal(layers(pruned_model)[layer].weight.data, expected)


@pytest.mark.parametrize("layer", ["conv_a", "fc_b"])
def test_all_zero_layer_stays_zero(pruned_model, layer):
    """A completely pruned layer stays all zero, and the other layers are still shared."""
    layers(pruned_model)[layer].weight.data.zero_()
    before = copy.deepcopy(pruned_model)
    apply_weight_sharing(pruned_model, bits=2)
    for name, module in layers(pruned_model).items():
        check_shared_layer(layers(before)[name].weight.data, module.weight.data, 2)
    assert torch.count_nonzero(layers(pruned_model)[layer].weight) == 0


def test_alexnet_shared_at_5_bits(shared_alexnet_session):
    """The hard-pruned AlexNet shared at 5 bits has at most 32 distinct non-zero values in every layer."""
    for name, module in shared_alexnet_session.prunable_layers():
        weight = module.weight.data
        assert 0 < len(torch.unique(weight[weight != 0])) <= 32, name
        assert abs((weight == 0).double().mean().item() - 0.99) < 0.001, name


def test_a_large_layer_fits_on_a_fixed_sample_and_every_weight_takes_its_nearest_centroid(monkeypatch):
    from net import quantization
    monkeypatch.setattr(quantization, "FIT_SAMPLE", 2_000)
    values = np.random.default_rng(3).standard_normal(20_000).astype(np.float32)
    shared = quantization.share_values(values, 3)
    centroids = np.unique(shared)
    assert centroids.size == 8 and np.array_equal(shared, quantization.share_values(values, 3))
    nearest = centroids[np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)]
    assert np.array_equal(shared, nearest)
    monkeypatch.setattr(quantization, "SAMPLE_SEED", 1)
    assert not np.array_equal(shared, quantization.share_values(values, 3))  # the sample decides the centroids
