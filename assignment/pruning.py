"""Step 1 of Deep Compression: train AlexNet, prune it, retrain what is left.

    python pruning.py                      # the course's recipe, on the full data set
    python pruning.py --subset 2000 --epochs 1 --retrain-epochs 1   # a quick smoke run
    python pruning.py --keep 10            # keep 10% of every layer's weights (prune 90%)

Writes saves/initial_model.ptmodel and saves/model_after_retraining.ptmodel.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import util
from net.models import AlexNet

# The course's recipe: the percentage of weights KEPT in each layer (the
# handout's q of prune_by_percentile; fc2 keeps 1%, so 99% of it is pruned).
# The big fc layers tolerate far more pruning than the first convolution.
DEFAULT_LAYER_KEEP = {"conv1": 50.0, "conv2": 20.0, "conv3": 10.0, "conv4": 10.0, "conv5": 10.0,
                      "fc1": 4.0, "fc2": 1.0, "fc3": 15.0}

Masks = Dict[str, torch.Tensor]


def pruning_masks(model: nn.Module) -> Masks:
    """Map the name of every conv and fc weight to a boolean mask of its unpruned (non-zero) entries."""
    return {name: p.data != 0 for name, p in model.named_parameters()
            if name.endswith("weight") and p.dim() > 1}


def zero_pruned_gradients(model: nn.Module, masks: Masks) -> None:
    """Zero the gradient of every pruned weight, so that plain SGD cannot move it."""
    for name, p in model.named_parameters():
        # TODO: if `name` is in `masks` and `p.grad` is not None, set the
        #       entries of `p.grad` where the mask is False to 0 (in place).
        pass


def zero_pruned_weights(model: nn.Module, masks: Masks) -> None:
    """Put every pruned weight back to exactly 0 after an optimizer step.

    Zero gradients are not enough: momentum, weight decay and Adam's running
    averages can still move a pruned weight away from 0.
    """
    for name, p in model.named_parameters():
        # TODO: if `name` is in `masks`, set the entries of `p.data` where the
        #       mask is False to 0 (in place; keep the others unchanged).
        pass


def train(model: nn.Module, data: util.ImageSet, optimizer: torch.optim.Optimizer, epochs: int,
          device: torch.device, batch_size: int = 128,
          scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
          generator: Optional[torch.Generator] = None, progress: bool = True) -> None:
    """Train ``model`` on ``data`` for ``epochs`` epochs, keeping pruned weights at 0.

    The weights that are 0 when training starts count as pruned; they stay
    exactly 0 after every step. ``scheduler``, if given, steps once per batch.
    """
    masks = pruning_masks(model)
    steps_per_epoch = -(-len(data) // batch_size)
    for epoch in range(epochs):
        model.train()
        bar = tqdm(util.batches(data, batch_size, device, train=True, generator=generator),
                   total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
        for images, labels in bar:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            zero_pruned_gradients(model, masks)
            optimizer.step()
            zero_pruned_weights(model, masks)
            if scheduler is not None:
                scheduler.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")


def make_optimizer(model: nn.Module, lr: float, epochs: int, steps_per_epoch: int, weight_decay: float):
    """SGD with Nesterov momentum and a one-cycle learning-rate schedule, stepped per batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                    total_steps=max(1, epochs * steps_per_epoch))
    return optimizer, scheduler


def parse_keep(text: str) -> Union[float, Dict[str, float]]:
    """``"10"`` -> keep 10% of every layer; ``"conv1=50,fc2=1"`` -> a per-layer mapping (ValueError if neither)."""
    return util.per_layer("--keep", text, float, "a percentage such as 10, or layer=percentage pairs such as "
                                                 "conv1=50,fc2=1")


def check_pruning_flags(args: argparse.Namespace) -> None:
    """Reject bad pruning flags now, before 30 epochs of training, rather than after them."""
    if args.prune_rate is not None:
        raise ValueError(f"--prune-rate was replaced by --keep, the percentage of weights KEPT per layer: "
                         f"--prune-rate {args.prune_rate} is --keep {_complement(args.prune_rate)}")
    if args.prune_method == "percentile":
        AlexNet()._rates_by_layer(parse_keep(args.keep))  # raises ValueError for unknown layers or bad numbers
    elif not args.sensitivity > 0:
        raise ValueError(f"--sensitivity must be positive, got {args.sensitivity}")
    for flag in ("epochs", "retrain_epochs"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")


def _complement(text: str) -> str:
    """``"90"`` -> ``"10"``, ``"fc2=99,fc1=96"`` -> ``"fc2=1,fc1=4"``; the text unchanged when it does not parse."""
    try:
        parsed = parse_keep(text)
    except ValueError:
        return text
    if isinstance(parsed, dict):
        return ",".join(f"{name}={100 - value:g}" for name, value in parsed.items())
    return f"{100 - parsed:g}"


def warn_if_nothing_pruned(alive_before: int, model: nn.Module) -> None:
    """Say loudly when pruning left every weight in place (the usual sign of an unfinished TODO)."""
    alive_after = sum(int(torch.count_nonzero(p.data)) for p in model.parameters())
    if alive_after == alive_before:
        print("\nWARNING: pruning changed nothing: every weight that was non-zero still is. "
              "Are _prune and prune_by_percentile / prune_by_std in net/prune.py still TODOs?\n",
              file=sys.stderr)


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs of initial training")
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate of initial training")
    parser.add_argument("--retrain-epochs", type=int, default=8, help="epochs of retraining after pruning")
    parser.add_argument("--retrain-lr", type=float, default=0.01, help="peak learning rate of retraining")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--prune-method", choices=["percentile", "std"], default="percentile")
    parser.add_argument("--keep", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_LAYER_KEEP.items()),
                        help="percentile method: the percentage of each layer's weights to KEEP (the handout's q; "
                             "10 keeps 10%% and prunes 90%%), one number for every layer or layer=percentage pairs")
    parser.add_argument("--prune-rate", default=None, help=argparse.SUPPRESS)  # replaced by --keep
    parser.add_argument("--sensitivity", type=float, default=0.25,
                        help="std method: threshold = sensitivity * std of each layer")
    parser.add_argument("--resume", action="store_true",
                        help="reuse saves/initial_model.ptmodel instead of training it again")
    args = parser.parse_args()
    check_pruning_flags(args)

    device = util.select_device(args.device)
    generator = util.set_seed(args.seed)
    train_set = util.load_cifar10(args.data_dir, train=True).subset(args.subset)
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    saves = Path(args.saves_dir)
    saves.mkdir(parents=True, exist_ok=True)
    steps = -(-len(train_set) // args.batch_size)
    print(f"device: {device}, {len(train_set)} training and {len(test_set)} test images")

    initial_path = saves / "initial_model.ptmodel"
    if args.resume and initial_path.exists():
        model = util.load_model(str(initial_path)).to(device)
        print(f"--- Reusing {initial_path} ---")
    else:
        model = AlexNet().to(device)
        print("--- Initial training ---")
        optimizer, scheduler = make_optimizer(model, args.lr, args.epochs, steps, args.weight_decay)
        train(model, train_set, optimizer, args.epochs, device, args.batch_size, scheduler, generator)
        torch.save(model, initial_path)
    accuracy = util.test(model, test_set, device)
    util.log_accuracy(args.log, "initial_accuracy", accuracy, len(test_set))

    print("--- Before pruning ---")
    util.print_nonzeros(model)
    alive_before = sum(int(torch.count_nonzero(p.data)) for p in model.parameters())
    if args.prune_method == "percentile":
        model.prune_by_percentile(parse_keep(args.keep))
    else:
        model.prune_by_std(args.sensitivity)
    warn_if_nothing_pruned(alive_before, model)
    accuracy = util.test(model, test_set, device)
    util.log_accuracy(args.log, "accuracy_after_pruning", accuracy, len(test_set))
    print("--- After pruning ---")
    util.print_nonzeros(model)

    print("--- Retraining ---")
    optimizer, scheduler = make_optimizer(model, args.retrain_lr, args.retrain_epochs, steps, args.weight_decay)
    train(model, train_set, optimizer, args.retrain_epochs, device, args.batch_size, scheduler, generator)
    torch.save(model, saves / "model_after_retraining.ptmodel")
    accuracy = util.test(model, test_set, device)
    util.log_accuracy(args.log, "accuracy_after_retraining", accuracy, len(test_set))
    print("--- After retraining ---")
    util.print_nonzeros(model)


if __name__ == "__main__":
    util.run_main(main)
