"""The staff recipe: how far the handout's AlexNet compresses above the 58% gate.

    python -m staff.recipe --data-dir D --out DIR [--device cuda] [--teacher PATH] [--quick]

Steps, each measured on the full test set (accuracy, compressed bytes and rate
from ``huffman_encode_model``, wall time) and appended to ``DIR/steps.jsonl``:

1. ``dense``: train the AlexNet (``pruning.make_optimizer`` / ``pruning.train``), or load ``--teacher``;
2. ``prune``: gradual magnitude pruning towards per-layer sparsities on Zhu &
   Gupta's cubic schedule (one pruning step per epoch during the ramp, then
   fine-tuning at the target), with distillation from the dense model, pruned
   weights kept at exactly 0 and dropout scaled down as Han et al. do. If the
   pruned model misses the accuracy target on the validation split, the
   sparsest snapshot of the ramp that met it is fine-tuned instead;
3. ``share``: per-layer k-means weight sharing (``apply_weight_sharing``);
4. ``finetune``: centroid fine-tuning with distillation (the epoch, or the
   shared model before it, most accurate on the validation split is kept;
   steps 3-4 are redone with one more bit per layer if the validation
   accuracy misses the target);
5. ``reorder``: permute the fc hidden units so the CSC gaps shrink (same function);
   then the model's ``state_dict`` (what the leaderboard accepts besides a whole model) is written to
   ``DIR/staff_model.ptmodel``, encoded into
   ``DIR/encodings/``, decoded back and checked bit for bit, and the per-layer
   table goes to ``DIR/table.txt``.

Decisions use a validation split held out of the training set (``--val-size``);
the test set is only reported. Every hyperparameter is a flag; ``--quick``
shrinks every phase to a smoke run.
"""
import contextlib
import copy
import io
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from grader.reference import PACKAGE, SOLUTIONS, load, load_script, reference
from grader.safeload import load_state_dict
from staff.compress import (cubic_sparsity, distilled, finetune_centroids, fit, prune_to, reorder_hidden_units,
                            retrain_dropout, sparsity_of)

# The handout's code (solutions/), under the grader's private package name: see grader/reference.py.
_handout = reference()
util, AlexNet = _handout.util, _handout.AlexNet
huffman_decode_model, huffman_encode_model = _handout.huffman.huffman_decode_model, _handout.huffman.huffman_encode_model
apply_weight_sharing = _handout.quantization.apply_weight_sharing


_pruning = load_script(load(SOLUTIONS, PACKAGE), "pruning")
make_optimizer, pruning_masks, train = _pruning.make_optimizer, _pruning.pruning_masks, _pruning.train
zero_pruned_gradients, zero_pruned_weights = _pruning.zero_pruned_gradients, _pruning.zero_pruned_weights


def load_alexnet(path: str) -> nn.Module:
    """The handout's AlexNet with the weights of ``path`` (a whole model or a ``state_dict``), loaded weights-only."""
    model = AlexNet()
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    model.load_state_dict(load_state_dict(path, expected))
    return model


# Where the bytes go (reference format): fc2 holds 16.7M of the 20.3M weights and each of its non-zeros
# costs a Huffman-coded row gap; conv3-5 hold 0.6-0.9M each, and every one of their 3x3 slices costs
# four indptr symbols even when empty (about 128 KB in all, like the 37 KB of raw biases, whatever the
# weights). So fc2 is pruned hardest, conv3-5 next; conv1 (23K weights) is cheap and sensitive.
DEFAULT_SPARSITY = "conv1=65,conv2=94,conv3=98,conv4=98.5,conv5=98,fc1=99,fc2=99.9,fc3=92"
DEFAULT_BITS = "conv1=5,conv2=4,conv3=4,conv4=4,conv5=4,fc1=3,fc2=2,fc3=4"


def per_layer(text: str, kind=float) -> Dict[str, float]:
    """``"conv1=50,fc2=99"`` -> ``{"conv1": 50.0, "fc2": 99.0}``; one number applies to every layer."""
    rates = util.per_layer("a per-layer setting", text, kind, "a number, or layer=number pairs such as conv1=50,fc2=99")
    if not isinstance(rates, dict):
        rates = dict.fromkeys((name for name, _ in AlexNet().prunable_layers()), rates)
    return {name: kind(value) for name, value in rates.items()}


@dataclass
class Recorder:
    """Measures a model after each step and appends the result to ``steps.jsonl``."""

    out: Path
    device: torch.device
    test: util.ImageSet
    val: util.ImageSet
    rows: List[dict] = field(default_factory=list)

    def accuracy(self, model: nn.Module, data: util.ImageSet) -> float:
        return util.evaluate(model, data, self.device, progress=False)[1] if len(data) else float("nan")

    def record(self, step: str, model: nn.Module, seconds: float, encode: bool = True, **details) -> dict:
        """Measure ``model`` (test and validation accuracy, bytes in the reference format) and log the step."""
        row = {"step": step, "test_accuracy": round(self.accuracy(model, self.test), 2),
               "val_accuracy": round(self.accuracy(model, self.val), 2),
               "nonzero_weights": nonzeros(model),
               "compressed_bytes": None, "rate": None, "wall_s": round(seconds, 1), "device": str(self.device)}
        if encode:
            report = encode_quietly(model, self.out / "encodings")
            row.update(compressed_bytes=report.compressed_bytes, rate=round(report.rate, 2))
        row.update(details)
        self.rows.append(row)
        with open(self.out / "steps.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        rate = f"{row['rate']:.1f}x" if row["rate"] else "not encoded"
        print(f"[{step}] test {row['test_accuracy']:.2f}%, val {row['val_accuracy']:.2f}%, {rate}, "
              f"{row['nonzero_weights']} non-zero weights, {seconds:.0f} s", flush=True)
        return row


def encode_quietly(model: nn.Module, directory: Path):
    with contextlib.redirect_stdout(io.StringIO()):
        return huffman_encode_model(model, directory)


class Clock:
    """Wall time of a step, with the device's queued work included."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.now()

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def seconds(self) -> float:
        return self.now() - self.start


def nonzeros(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(m.weight)) for _, m in model.prunable_layers())


def state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def masked_training(model: nn.Module, train_set: util.ImageSet, device: torch.device, epochs: int, lr: float,
                    loss, args, generator: torch.Generator,
                    before_epoch: Optional[Callable[[int], None]] = None,
                    after_epoch: Optional[Callable[[int], None]] = None) -> None:
    """SGD with the handout's one-cycle schedule, pruned weights kept at exactly 0.

    ``before_epoch(epoch)`` may prune; the masks are rebuilt from the zeros after it.
    """
    steps = -(-len(train_set) // args.batch_size)
    optimizer, scheduler = make_optimizer(model, lr, epochs, steps, args.weight_decay)
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        masks = pruning_masks(model)
        fit(model, train_set, device, 1, optimizer, loss, scheduler,
            before_step=lambda: zero_pruned_gradients(model, masks),
            after_step=lambda: zero_pruned_weights(model, masks),
            batch_size=args.batch_size, generator=generator, progress=args.progress)
        if after_epoch is not None:
            after_epoch(epoch)


def dropout_for(model: nn.Module, original: float, args) -> float:
    """The dropout rate while retraining the pruned ``model``: ``--retrain-dropout``, or Han et al.'s when negative."""
    return retrain_dropout(model, original) if args.retrain_dropout < 0 else args.retrain_dropout


def gradual_pruning(model: nn.Module, teacher: nn.Module, train_set: util.ImageSet, recorder: Recorder,
                    args, generator: torch.Generator) -> Optional[dict]:
    """Prune ``model`` towards ``args.sparsity`` on the cubic schedule, one step per ramp epoch, with distillation.

    With ``--prune-epochs 0`` it prunes to the targets at once, without
    retraining (to push an already compressed ``--teacher`` further).

    Returns the sparsest end-of-epoch snapshot (``epoch``, ``val_accuracy``,
    ``state``) whose validation accuracy reached the target plus the sharing
    allowance, or None if none did.
    """
    targets = per_layer(args.sparsity)
    if args.prune_epochs == 0:
        prune_to(model, targets, args.kernel_layers)
        return None
    start = sparsity_of(model)
    original_dropout = model.dropout
    threshold = args.target_accuracy + args.share_allowance
    best: Optional[dict] = None

    def prune_step(epoch: int) -> None:
        if epoch < args.ramp_epochs:
            progress = (epoch + 1) / args.ramp_epochs
            prune_to(model, {n: cubic_sparsity(progress, start[n], t) for n, t in targets.items()},
                     args.kernel_layers)
        model.dropout = dropout_for(model, original_dropout, args)

    def snapshot(epoch: int) -> None:
        nonlocal best
        accuracy = recorder.accuracy(model, recorder.val)
        print(f"pruning epoch {epoch + 1}/{args.prune_epochs}: {nonzeros(model)} non-zero weights, "
              f"val {accuracy:.2f}%, dropout {model.dropout:.3f}", flush=True)
        if accuracy >= threshold:
            best = {"epoch": epoch, "val_accuracy": accuracy, "state": state(model)}

    loss = distilled(teacher, args.kd_alpha, args.kd_temperature)
    masked_training(model, train_set, recorder.device, args.prune_epochs, args.prune_lr, loss, args, generator,
                    prune_step, snapshot)
    return best


def share_and_finetune(model: nn.Module, bits: Dict[str, int], teacher: nn.Module, train_set: util.ImageSet,
                       recorder: Recorder, args, generator: torch.Generator) -> dict:
    """Steps 3 and 4: k-means sharing at ``bits``, then centroid fine-tuning.

    Of the shared model and the model after each fine-tuning epoch, keeps the
    one most accurate on the validation split (the latest on a tie); returns
    the ``finetune`` row, which measures the model kept.
    """
    clock = Clock(recorder.device)
    with contextlib.redirect_stdout(io.StringIO()):
        apply_weight_sharing(model, bits)
    shared_row = recorder.record("share", model, clock.seconds(), bits=bits)
    best = {"epoch": 0, "val_accuracy": shared_row["val_accuracy"], "state": state(model)}

    def keep_best(epoch: int) -> None:
        accuracy = recorder.accuracy(model, recorder.val)
        print(f"centroid fine-tuning epoch {epoch + 1}/{args.ft_epochs}: val {accuracy:.2f}%", flush=True)
        if accuracy >= best["val_accuracy"]:
            best.update(epoch=epoch + 1, val_accuracy=accuracy, state=state(model))

    clock = Clock(recorder.device)
    finetune_centroids(model, train_set, recorder.device, args.ft_epochs, args.ft_lr,
                       distilled(teacher, args.kd_alpha, args.kd_temperature), args.batch_size, generator,
                       args.progress, after_epoch=keep_best)
    model.load_state_dict(best["state"])
    return recorder.record("finetune", model, clock.seconds(), epochs=args.ft_epochs, kept_epoch=best["epoch"],
                           bits=bits)


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--out", default="staff_run", help="folder for steps.jsonl, the model, table and encodings")
    parser.add_argument("--teacher", default=None,
                        help="a trained .ptmodel (dense or already compressed) to start from and distil from")
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out for decisions")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of dense training")
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate of dense training")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--sparsity", default=DEFAULT_SPARSITY, help="target percent of zeros per layer")
    parser.add_argument("--kernel-layers", default="",
                        help="conv layers pruned by whole kernel slices, comma-separated")
    parser.add_argument("--prune-epochs", type=int, default=30,
                        help="epochs of the pruning phase in all (0: prune to the targets at once, no retraining)")
    parser.add_argument("--ramp-epochs", type=int, default=20,
                        help="of which the first ones each end with a pruning step")
    parser.add_argument("--prune-lr", type=float, default=0.01, help="peak learning rate of the pruning phase")
    parser.add_argument("--retrain-dropout", type=float, default=-1.0,
                        help="dropout while pruning; negative: Han et al.'s D*sqrt(kept fraction of fc1+fc2)")
    parser.add_argument("--kd-alpha", type=float, default=0.7, help="weight of the distillation term (0: plain CE)")
    parser.add_argument("--kd-temperature", type=float, default=4.0)
    parser.add_argument("--target-accuracy", type=float, default=60.0,
                        help="validation accuracy the final model must reach (the goal is 59%% on test)")
    parser.add_argument("--share-allowance", type=float, default=0.5,
                        help="validation points a pruned model must have above the target before sharing")
    parser.add_argument("--fallback-epochs", type=int, default=2, help="fine-tuning of a fallback snapshot")
    parser.add_argument("--bits", default=DEFAULT_BITS, help="k-means bits per layer")
    parser.add_argument("--bit-retries", type=int, default=1, help="times sharing is redone with one more bit")
    parser.add_argument("--ft-epochs", type=int, default=3, help="epochs of centroid fine-tuning")
    parser.add_argument("--ft-lr", type=float, default=3e-5, help="Adam learning rate of centroid fine-tuning")
    parser.add_argument("--no-reorder", action="store_true", help="skip the hidden-unit permutation")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one or two epochs per phase")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args()
    run(args)


def resolve(args) -> None:
    """Apply ``--quick`` and ``--epochs-scale`` to the epoch counts, in place."""
    if args.quick:
        args.epochs, args.prune_epochs, args.ramp_epochs, args.fallback_epochs, args.ft_epochs = 1, 3, 2, 1, 1
    for name in ("epochs", "prune_epochs", "ramp_epochs", "fallback_epochs", "ft_epochs"):
        epochs = getattr(args, name)
        setattr(args, name, max(1, round(epochs * args.epochs_scale)) if epochs > 0 else 0)
    args.ramp_epochs = min(args.ramp_epochs, args.prune_epochs)
    args.kernel_layers = [name for name in args.kernel_layers.split(",") if name]


def run(args) -> None:
    resolve(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.jsonl").unlink(missing_ok=True)
    device = util.select_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    generator = util.set_seed(args.seed)

    full = util.load_cifar10(args.data_dir, train=True).subset(args.subset)
    n_train = len(full) - min(args.val_size, len(full) // 5)
    on_device = lambda s: util.ImageSet(s.images.to(device), s.labels.to(device))  # noqa: E731
    train_set = on_device(util.ImageSet(full.images[:n_train], full.labels[:n_train]))
    val_set = on_device(util.ImageSet(full.images[n_train:], full.labels[n_train:]))
    test_set = on_device(util.load_cifar10(args.data_dir, train=False).subset(args.subset))
    recorder = Recorder(out, device, test_set, val_set)
    with open(out / "steps.jsonl", "a") as f:
        f.write(json.dumps({"step": "config", **{k: v for k, v in vars(args).items()},
                            "train_images": len(train_set), "val_images": len(val_set),
                            "test_images": len(test_set), "device": str(device),
                            "torch": torch.__version__, "python": platform.python_version()}) + "\n")
    print(f"device {device}: {len(train_set)} training, {len(val_set)} validation, {len(test_set)} test images")

    # 1. dense
    clock = Clock(device)
    if args.teacher:
        model = load_alexnet(args.teacher).to(device)
    else:
        model = AlexNet().to(device)
        steps = -(-len(train_set) // args.batch_size)
        optimizer, scheduler = make_optimizer(model, args.lr, args.epochs, steps, args.weight_decay)
        train(model, train_set, optimizer, args.epochs, device, args.batch_size, scheduler, generator,
              progress=args.progress)
        torch.save(model.state_dict(), out / "teacher.ptmodel.partial")
        (out / "teacher.ptmodel.partial").replace(out / "teacher.ptmodel")  # complete when it appears
    shared = all(torch.unique(m.weight).numel() <= 2 ** 16 for _, m in model.prunable_layers())
    recorder.record("teacher" if args.teacher else "dense", model, clock.seconds(), encode=shared,
                    epochs=0 if args.teacher else args.epochs)
    teacher = copy.deepcopy(model).eval()
    original_dropout = model.dropout

    # 2. gradual pruning with distillation, and the fallback
    clock = Clock(device)
    best = gradual_pruning(model, teacher, train_set, recorder, args, generator)
    fallback = best is not None and best["epoch"] < args.prune_epochs - 1
    if fallback:
        print(f"the pruned model misses the target: back to the end of epoch {best['epoch'] + 1} "
              f"(val {best['val_accuracy']:.2f}%), fine-tuned {args.fallback_epochs} epochs")
        model.load_state_dict(best["state"])
        model.dropout = dropout_for(model, original_dropout, args)
        masked_training(model, train_set, device, args.fallback_epochs, args.prune_lr / 2,
                        distilled(teacher, args.kd_alpha, args.kd_temperature), args, generator)
    recorder.record("prune", model, clock.seconds(), epochs=args.prune_epochs + fallback * args.fallback_epochs,
                    fallback_from_epoch=best["epoch"] + 1 if fallback else None,
                    sparsity={k: round(v, 3) for k, v in sparsity_of(model).items()})
    model.dropout = original_dropout
    pruned = state(model)

    # 3-4. sharing and centroid fine-tuning, with more bits if the target is missed
    bits = per_layer(args.bits, int)
    attempts = []
    for attempt in range(args.bit_retries + 1):
        if attempt:
            model.load_state_dict(pruned)
            bits = {name: min(8, b + 1) for name, b in bits.items()}
            print(f"below the target: sharing again with {bits}")
        row = share_and_finetune(model, bits, teacher, train_set, recorder, args, generator)
        if row["val_accuracy"] >= args.target_accuracy:
            break
        attempts.append((row["val_accuracy"], state(model)))
    else:  # no attempt reached the target: keep the most accurate
        model.load_state_dict(max(attempts, key=lambda attempt: attempt[0])[1])

    # 5. permutation of the fc hidden units, then the final files
    if not args.no_reorder:
        clock = Clock(device)
        reorder_hidden_units(model)
        recorder.record("reorder", model, clock.seconds())
    finish(model, out, device, test_set)


def finish(model: nn.Module, out: Path, device: torch.device, test_set: util.ImageSet) -> None:
    """Write the model, encode it, decode it into a fresh AlexNet and check that nothing changed."""
    model = model.cpu()
    torch.save(model.state_dict(), out / "staff_model.ptmodel")
    report = encode_quietly(model, out / "encodings")
    (out / "table.txt").write_text(report.table() + "\n")
    decoded = huffman_decode_model(AlexNet(), out / "encodings")
    identical = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), decoded.state_dict().values()))
    accuracy = util.evaluate(decoded.to(device), test_set, device, progress=False)[1]
    with open(out / "steps.jsonl", "a") as f:
        f.write(json.dumps({"step": "final", "test_accuracy": round(accuracy, 2),
                            "compressed_bytes": report.compressed_bytes, "rate": round(report.rate, 2),
                            "decoded_bit_identical": identical}) + "\n")
    print(report.table())
    print(f"final (decoded from {out / 'encodings'}): {accuracy:.2f}% on {len(test_set)} test images, "
          f"{report.rate:.1f}x, bit-identical: {identical}")
    if not identical:
        raise RuntimeError("the decoded model differs from the saved one")


if __name__ == "__main__":
    util.run_main(main)
