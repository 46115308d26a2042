"""Masked retraining (solutions/pruning.py): pruned weights stay exactly 0 whatever the optimizer keeps."""
import pytest
import torch

import pruning
import util
from tests.conftest import small_net

OPTIMIZERS = {
    "sgd-momentum-wd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd-nesterov-wd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                                                      weight_decay=5e-4),
    "adam-wd": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
}


def tiny_images(n=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return util.ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                         torch.randint(0, 10, (n,), generator=generator))


def run_train(model, optimizer, epochs=2, **kwargs):
    pruning.train(model, tiny_images(), optimizer, epochs, torch.device("cpu"), batch_size=8,
                  generator=torch.Generator().manual_seed(0), progress=False, **kwargs)


def layer_weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.dim() > 1}


def assert_pruned_stay_zero_and_alive_weights_move(before, model):
    for name, p in model.named_parameters():
        if name not in before:
            continue
        pruned = before[name] == 0
        assert pruned.any(), f"{name}: the test needs pruned weights"
        assert torch.all(p.data[pruned] == 0), f"{name}: {int((p.data[pruned] != 0).sum())} pruned weights regrew"
        moved = (p.data[~pruned] != before[name][~pruned]).double().mean().item()
        assert moved > 0.5, f"{name}: only {moved:.0%} of the unpruned weights changed"


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_retraining_keeps_pruned_weights_at_zero(make_optimizer):
    """After train() on a pruned model, every weight that was 0 is exactly 0 and the others were trained."""
    model = small_net()
    model.prune_by_percentile(40.0)
    before = layer_weights(model)
    run_train(model, make_optimizer(model.parameters()))
    assert_pruned_stay_zero_and_alive_weights_move(before, model)


@pytest.mark.parametrize("name", ["sgd-nesterov-wd", "adam-wd"])
def test_optimizer_state_from_before_pruning_does_not_regrow_weights(name):
    """Momentum / Adam averages filled while the model was dense must not move weights pruned afterwards."""
    model = small_net()
    optimizer = OPTIMIZERS[name](model.parameters())
    run_train(model, optimizer, epochs=1)          # dense training fills the optimizer state
    assert optimizer.state, "the optimizer should hold state now"
    model.prune_by_percentile(40.0)
    before = layer_weights(model)
    run_train(model, optimizer, epochs=1)          # same optimizer, stale state
    assert_pruned_stay_zero_and_alive_weights_move(before, model)


def test_gradient_masking_alone_would_let_stale_momentum_regrow_weights(monkeypatch):
    """Control for the test above: without zero_pruned_weights, stale momentum does regrow pruned weights."""
    monkeypatch.setattr(pruning, "zero_pruned_weights", lambda model, masks: None)
    model = small_net()
    optimizer = OPTIMIZERS["sgd-nesterov-wd"](model.parameters())
    run_train(model, optimizer, epochs=1)
    model.prune_by_percentile(40.0)
    before = layer_weights(model)
    run_train(model, optimizer, epochs=1)
    regrown = sum(int((model.get_parameter(n).data[w == 0] != 0).sum()) for n, w in before.items())
    assert regrown > 0


def test_retraining_the_alexnet_with_the_scripts_optimizer():
    """AlexNet at the course's rates, two steps of the script's SGD + one-cycle schedule: zeros stay zeros."""
    from net.models import AlexNet
    torch.manual_seed(0)
    model = AlexNet()
    model.prune_by_percentile(pruning.DEFAULT_LAYER_KEEP)
    before = layer_weights(model)
    optimizer, scheduler = pruning.make_optimizer(model, lr=0.01, epochs=1, steps_per_epoch=2, weight_decay=5e-4)
    pruning.train(model, tiny_images(16), optimizer, 1, torch.device("cpu"), batch_size=8, scheduler=scheduler,
                  generator=torch.Generator().manual_seed(0), progress=False)
    assert_pruned_stay_zero_and_alive_weights_move(before, model)


def test_pruning_masks_mark_the_nonzero_entries_of_weights_only(small_model):
    """pruning_masks: one boolean mask per conv/fc weight (no biases), True where the weight is non-zero."""
    small_model.prune_by_percentile(50.0)
    masks = pruning.pruning_masks(small_model)
    assert sorted(masks) == ["conv_a.weight", "conv_b.weight", "fc_a.weight", "fc_b.weight"]
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert torch.equal(mask, small_model.get_parameter(name).data != 0)


def test_zero_pruned_gradients(small_model):
    """Gradients are zeroed exactly where the mask is False, in place; biases and missing grads are left alone."""
    small_model.prune_by_percentile(50.0)
    masks = pruning.pruning_masks(small_model)
    for name, p in small_model.named_parameters():
        p.grad = None if name == "fc_b.weight" else torch.randn_like(p)
    grads = {name: p.grad for name, p in small_model.named_parameters() if p.grad is not None}
    copies = {name: g.clone() for name, g in grads.items()}
    pruning.zero_pruned_gradients(small_model, masks)
    assert small_model.fc_b.weight.grad is None
    for name, grad in grads.items():
        assert small_model.get_parameter(name).grad is grad, f"{name}: not in place"
        expected = copies[name] * masks[name] if name in masks else copies[name]
        assert torch.equal(grad, expected), name


def test_zero_pruned_weights(small_model):
    """Weights go back to exactly 0 where the mask is False, in place; the others and the biases are kept."""
    small_model.prune_by_percentile(50.0)
    masks = pruning.pruning_masks(small_model)
    with torch.no_grad():
        for p in small_model.parameters():
            p.add_(1.0)                      # every pruned weight has moved away from 0
    storage = {name: p.data_ptr() for name, p in small_model.named_parameters()}
    moved = {name: p.detach().clone() for name, p in small_model.named_parameters()}
    pruning.zero_pruned_weights(small_model, masks)
    for name, p in small_model.named_parameters():
        assert p.data_ptr() == storage[name], f"{name}: not in place"
        expected = moved[name] * masks[name] if name in masks else moved[name]
        assert torch.equal(p.data, expected), name
