"""Retraining: ``zero_pruned_gradients`` and ``zero_pruned_weights`` of pruning.py, alone and inside ``train`` (20 of the 70 prune points).

The models here are pruned by the test itself (random masks), so these
tests do not depend on the student's net/prune.py.
"""
import numpy as np
import pytest
import torch

from grader.suites.common import fail_if, prune_randomly, snapshot, unchanged_problems
from grader.worker.models import SGD, small_alexnet

pytestmark = pytest.mark.part("prune")

GRADIENTS = "pruning.py: zero_pruned_gradients"
WEIGHTS = "pruning.py: zero_pruned_weights"


def pruned_model(seed: int):
    """A trainable small model with half of every weight matrix pruned, and its masks of kept weights."""
    model = small_alexnet(seed=seed, trainable=True)
    return model, prune_randomly(model, 0.5, seed)


def random_tensors(model, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=generator) for name, p in model.named_parameters()}


def run_train(student, model, optimizer):
    """``(weights, gradients)`` after two epochs of the student's ``train`` on 16 random images, batches of 8."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 16)
    return student.train(model, optimizer, images, labels, epochs=2, batch_size=8)


def regrowth_problems(params, masks, how: str):
    """A message for every weight matrix whose pruned entries are no longer 0."""
    problems = []
    for name, mask in masks.items():
        regrown = (params[name][~mask] != 0).sum().item()
        if regrown:
            problems.append(f"{name}: {regrown} of its {(~mask).sum().item()} pruned weights are non-zero {how}")
    return problems


def learned_problems(params, before, masks):
    """A message if training moved none of the unpruned weights."""
    if all(torch.equal(params[n][m], before[n][m]) for n, m in masks.items()):
        return ["train() did not change any unpruned weight: only the pruned ones must stay fixed"]
    return []


@pytest.mark.points(6, todo=GRADIENTS)
def test_zero_pruned_gradients(student):
    """zero_pruned_gradients(model, masks) sets the gradients of pruned weights to 0 and leaves every other gradient alone."""
    model, masks = pruned_model(10)
    grads = random_tensors(model, 10)
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()
    before = snapshot(model)
    params, new_grads = student.zero_pruned_gradients(model, masks)
    problems = []
    for name, p in model.named_parameters():
        grad = new_grads.get(name)
        if grad is None:
            problems.append(f"{name}: its gradient was removed (set to None); only entries of pruned weights become 0")
            continue
        if grad.shape != p.shape:
            problems.append(f"{name}: its gradient's shape changed to {tuple(grad.shape)}")
            continue
        mask = masks.get(name, torch.ones_like(p, dtype=torch.bool))
        still = (grad[~mask] != 0).sum().item()
        changed = (grad[mask] != grads[name][mask]).sum().item()
        if still:
            problems.append(f"{name}: {still} of the {(~mask).sum().item()} pruned weights still have a non-zero gradient")
        if changed:
            problems.append(f"{name}: the gradients of {changed} unpruned entries changed"
                            + (" (a bias is never pruned)" if name.endswith("bias") else ""))
    problems += unchanged_problems(list(before), before, params, "zero_pruned_gradients must not change weights")
    fail_if(problems, "After zero_pruned_gradients(model, masks), with masks[name] True for kept weights:")


@pytest.mark.points(4, todo=GRADIENTS)
def test_train_with_plain_sgd(student):
    """With plain SGD (no momentum, no weight decay), train() leaves pruned weights at 0 and their gradients at 0."""
    model, masks = pruned_model(11)
    before = snapshot(model)
    params, grads = run_train(student, model, SGD(model.parameters(), lr=0.05))
    problems = regrowth_problems(params, masks, "after train() with plain SGD")
    for name, mask in masks.items():
        grad = grads.get(name)
        if grad is not None and grad.shape == mask.shape and (grad[~mask] != 0).any():
            problems.append(f"{name}: after train(), {(grad[~mask] != 0).sum().item()} pruned weights have a "
                            "non-zero gradient (the gradients of pruned weights must be zeroed before every "
                            "optimizer.step())")
    problems += learned_problems(params, before, masks)
    fail_if(problems, "Retraining with plain SGD must not bring pruned weights back:")


@pytest.mark.points(5, todo=WEIGHTS)
def test_zero_pruned_weights(student):
    """zero_pruned_weights(model, masks) sets pruned weights that moved back to exactly 0 and leaves every other value alone."""
    model, masks = pruned_model(12)
    noise = random_tensors(model, 12)
    for name, p in model.named_parameters():
        if name in masks:
            p.data[~masks[name]] = noise[name][~masks[name]]  # as if an optimizer step had moved them
    before = snapshot(model)
    params = student.zero_pruned_weights(model, masks)
    problems = regrowth_problems(params, masks, "after zero_pruned_weights")
    for name, mask in masks.items():
        changed = (params[name][mask] != before[name][mask]).sum().item()
        if changed:
            problems.append(f"{name}: {changed} unpruned weights changed")
    problems += unchanged_problems([n for n in before if n not in masks], before, params, "biases are never pruned")
    fail_if(problems, "After zero_pruned_weights(model, masks), with masks[name] True for kept weights:")


@pytest.mark.points(5, todo=WEIGHTS)
def test_train_with_momentum_and_weight_decay(student):
    """With an SGD (momentum 0.9, weight decay 5e-4) that ran before pruning, train() still keeps pruned weights exactly 0."""
    model = small_alexnet(seed=13, trainable=True)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    # One step before pruning, as in initial training: the optimizer now
    # remembers a non-zero momentum for weights that are about to be pruned.
    grads = random_tensors(model, 13)
    for name, p in model.named_parameters():
        p.grad = grads[name]
    optimizer.step()
    optimizer.zero_grad()
    masks = prune_randomly(model, 0.5, 13)
    before = snapshot(model)
    params, _ = run_train(student, model, optimizer)
    problems = regrowth_problems(params, masks, "after train() with SGD(momentum=0.9, weight_decay=5e-4)")
    problems += learned_problems(params, before, masks)
    fail_if(problems, "Momentum and weight decay move pruned weights even when their gradient is 0; "
                      "they must be set back to 0 after every optimizer.step():")
