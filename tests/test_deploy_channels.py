"""Channel pruning and its schedules (solutions/deploy/channels.py)."""
import pytest
import torch

from deploy import channels
from grader.worker.models import small_alexnet
from net.models import AlexNet


def test_scores_are_the_filters_norms():
    weight = torch.tensor([[[[3.0, -4.0]]], [[[0.0, 1.0]]]])
    assert channels.filter_scores(weight, "l1").tolist() == [7.0, 1.0]
    assert channels.filter_scores(weight, "l2").tolist() == [5.0, 1.0]
    with pytest.raises(ValueError, match="norm must be one of"):
        channels.filter_scores(weight, "l3")


def test_channels_to_keep_counts_and_order():
    scores = torch.tensor([0.5, 3.0, 0.1, 2.0, 2.0])
    assert channels.channels_to_keep(scores, 0.6).tolist() == [1, 3, 4]
    assert channels.channels_to_keep(scores, 0.0).tolist() == [1]
    with pytest.raises(ValueError, match="from 0 to 1"):
        channels.channels_to_keep(scores, 1.5)


def test_alexnet_channel_counts_and_consumer_shapes():
    torch.manual_seed(0)
    model = AlexNet().eval()
    left = channels.prune_channels(model, {"conv2": 0.5, "conv5": 0.25, "fc1": 0.5, "fc2": 0.125})
    assert left == {"conv2": 96, "conv5": 64, "fc1": 2048, "fc2": 512}
    assert tuple(model.conv2.weight.shape) == (96, 64, 5, 5) and tuple(model.conv2.bias.shape) == (96,)
    assert tuple(model.conv3.weight.shape) == (384, 96, 3, 3)
    assert tuple(model.conv5.weight.shape) == (64, 256, 3, 3)
    assert tuple(model.fc1.weight.shape) == (2048, 64)
    assert tuple(model.fc2.weight.shape) == (512, 2048)
    assert tuple(model.fc3.weight.shape) == (10, 512)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, removed", [("conv1", [0, 3]), ("conv2", [1, 2, 5]), ("conv5", [1, 2]),
                                           ("fc1", [0, 4, 5, 9]), ("fc2", [3])])
def test_removing_zero_channels_changes_no_output(name, removed):
    """Also behind the flatten: the small model's conv5 output is 2x2, so each channel is 4 features of fc1."""
    model = small_alexnet(seed=3, trainable=True).eval()
    layer = getattr(model, name)
    with torch.no_grad():
        layer.weight[removed] = 0.0
        layer.bias[removed] = 0.0
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = model(x)
    keep = [c for c in range(layer.weight.shape[0]) if c not in removed]
    channels.remove_channels(model, name, torch.tensor(keep))
    assert getattr(model, name).weight.shape[0] == len(keep)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_removing_nonzero_channels_does_change_outputs():
    model = small_alexnet(seed=3, trainable=True).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = model(x)
    channels.remove_channels(model, "conv5", torch.tensor([0, 1]))
    assert not torch.allclose(model(x), before)


def test_flattened_features_of_kept_channels():
    assert channels.flattened_features(torch.tensor([1, 3]), 4).tolist() == [4, 5, 6, 7, 12, 13, 14, 15]


def test_the_last_layer_and_unknown_layers_are_refused():
    model = small_alexnet()
    with pytest.raises(ValueError, match="last layer"):
        channels.remove_channels(model, "fc3", torch.tensor([0]))
    with pytest.raises(ValueError, match="cannot prune"):
        channels.prune_channels(model, {"conv9": 0.5})


def test_schedules_at_fixed_steps():
    assert channels.linear_schedule(2, 4, 0.2) == pytest.approx(0.6)
    assert channels.exponential_schedule(2, 4, 0.25) == pytest.approx(0.5)
    assert channels.cubic_schedule(2, 4, 0.2) == pytest.approx(0.3)
    for schedule in channels.SCHEDULES.values():
        assert schedule(0, 10, 0.1) == pytest.approx(1.0)
        assert schedule(10, 10, 0.1) == pytest.approx(0.1) == schedule(99, 10, 0.1)
    with pytest.raises(ValueError, match="steps must be positive"):
        channels.linear_schedule(1, 0, 0.5)
