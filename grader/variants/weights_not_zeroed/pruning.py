# Grader fixture, buggy variant 'weights_not_zeroed': zero_pruned_weights does nothing: momentum and weight decay regrow pruned weights.
"""Step 1 of Deep Compression: train AlexNet, prune it, retrain what is left.

    python pruning.py                      # the course's recipe, on the full data set
    python pruning.py --subset 2000 --epochs 1 --retrain-epochs 1   # a quick smoke run

Writes saves/initial_model.ptmodel and saves/model_after_retraining.ptmodel.
"""
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import util
from net.models import AlexNet

# The course's recipe: the percentage of weights pruned in each layer. The big
# fc layers tolerate far more pruning than the first convolution.
DEFAULT_LAYER_RATES = {"conv1": 50.0, "conv2": 80.0, "conv3": 90.0, "conv4": 90.0, "conv5": 90.0,
                       "fc1": 96.0, "fc2": 99.0, "fc3": 85.0}

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
        if name in masks and p.grad is not None:
            p.grad.masked_fill_(~masks[name], 0.0)


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


def parse_rates(text: str):
    """``"90"`` -> 90.0 for every layer; ``"conv1=50,fc2=99"`` -> a per-layer mapping."""
    if "=" not in text:
        return float(text)
    rates = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        rates[name.strip()] = float(value)
    return rates


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs of initial training")
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate of initial training")
    parser.add_argument("--retrain-epochs", type=int, default=8, help="epochs of retraining after pruning")
    parser.add_argument("--retrain-lr", type=float, default=0.01, help="peak learning rate of retraining")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--prune-method", choices=["percentile", "std"], default="percentile")
    parser.add_argument("--prune-rate", default=",".join(f"{k}={v:g}" for k, v in DEFAULT_LAYER_RATES.items()),
                        help="percentile method: one percentage, or layer=percentage pairs")
    parser.add_argument("--sensitivity", type=float, default=0.25,
                        help="std method: threshold = sensitivity * std of each layer")
    parser.add_argument("--resume", action="store_true",
                        help="reuse saves/initial_model.ptmodel instead of training it again")
    args = parser.parse_args()

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
    util.log(args.log, f"initial_accuracy {accuracy:.2f}")

    print("--- Before pruning ---")
    util.print_nonzeros(model)
    if args.prune_method == "percentile":
        model.prune_by_percentile(parse_rates(args.prune_rate))
    else:
        model.prune_by_std(args.sensitivity)
    accuracy = util.test(model, test_set, device)
    util.log(args.log, f"accuracy_after_pruning {accuracy:.2f}")
    print("--- After pruning ---")
    util.print_nonzeros(model)

    print("--- Retraining ---")
    optimizer, scheduler = make_optimizer(model, args.retrain_lr, args.retrain_epochs, steps, args.weight_decay)
    train(model, train_set, optimizer, args.retrain_epochs, device, args.batch_size, scheduler, generator)
    torch.save(model, saves / "model_after_retraining.ptmodel")
    accuracy = util.test(model, test_set, device)
    util.log(args.log, f"accuracy_after_retraining {accuracy:.2f}")
    print("--- After retraining ---")
    util.print_nonzeros(model)


if __name__ == "__main__":
    util.run_main(main)
