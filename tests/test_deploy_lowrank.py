"""Low-rank factorisation (solutions/deploy/lowrank.py): optimal error, shapes, exact at full rank."""
import pytest
import torch
import torch.nn as nn

from deploy import lowrank


@pytest.mark.parametrize("rank", [1, 4, 9])
def test_truncated_svd_reaches_the_eckart_young_optimum(rank):
    matrix = torch.randn(15, 9, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    left, right = lowrank.truncated_svd(matrix, rank)
    assert left.shape == (15, rank) and right.shape == (rank, 9)
    s = torch.linalg.svdvals(matrix)
    optimum = s[rank:].pow(2).sum().sqrt()
    assert torch.linalg.norm(matrix - left @ right) == pytest.approx(float(optimum), abs=1e-9)


def test_rank_for_energy():
    s = torch.tensor([4.0, 2.0, 2.0, 1.0])  # energies 16, 4, 4, 1 of 25
    assert [lowrank.rank_for_energy(s, e) for e in (0.5, 0.64, 0.65, 0.96, 0.97, 1.0)] == [1, 1, 2, 3, 4, 4]
    with pytest.raises(ValueError, match="energy"):
        lowrank.rank_for_energy(s, 0.0)


def test_linear_factorisation_is_exact_at_full_rank_and_smaller_below():
    torch.manual_seed(0)
    layer = nn.Linear(12, 20)
    x = torch.randn(5, 12)
    full = lowrank.factorize_linear(layer, 12)
    torch.testing.assert_close(full(x), layer(x), rtol=1e-4, atol=1e-5)
    thin = lowrank.factorize_linear(layer, 3)
    assert sum(p.numel() for p in thin.parameters()) == 3 * (12 + 20) + 20
    assert [m.weight.shape for m in thin] == [(3, 12), (20, 3)]


def test_conv_factorisation_keeps_stride_padding_and_outputs():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 9, 9)
    full = lowrank.factorize_conv(layer, 27)
    torch.testing.assert_close(full(x), layer(x), rtol=1e-4, atol=1e-5)
    thin = lowrank.factorize_conv(layer, 0.9)
    assert thin[0].kernel_size == (3, 3) and thin[0].stride == (2, 2) and thin[1].kernel_size == (1, 1)
    assert thin[0].bias is None and thin[1].bias is not None
    assert thin(x).shape == layer(x).shape


def test_low_rank_replaces_layers_in_place_and_refuses_bad_ranks():
    model = nn.Module()
    model.fc1 = nn.Linear(6, 4)
    assert lowrank.low_rank(model, {"fc1": 2}) == {"fc1": 2}
    assert isinstance(model.fc1, nn.Sequential)
    with pytest.raises(ValueError, match="not a conv or fc layer"):
        lowrank.low_rank(model, {"fc9": 2})
    with pytest.raises(ValueError, match="at least 1"):
        lowrank.factorize_linear(nn.Linear(3, 3), 0)
