"""The microcontroller track end to end: train a binary TinyNet on 16x16 CIFAR-10, prune it to a board's
budget, export it to C, check the C against Python on test images, and measure it on an ATmega328P.

    python mcu_train.py --data-dir DATA                  # binary model for the UNO
    python mcu_train.py --data-dir DATA --float-reference  # also train the same shape with float weights

Writes ``saves/mcu/mcu_model.h`` (the header to flash with ``mcu/infer.c``) and
``saves/mcu/results.json`` (every number printed). With ``avr-gcc``, ``avr-size``
and ``simavr`` installed, the flash, RAM and cycles are measured, and only
then does it say "fits"; otherwise it prints the estimate and says why.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import util
from homework import MCU_BOARDS, MCU_DEFAULT_BOARD
from mcu import toolchain
from mcu.budget import check
from mcu.export import integer_logits, integerize, write_header
from mcu.model import DEFAULT_CHANNELS, TinyNet, downsample, to_input
from mcu.prune import fit_to_budget

CALIBRATION_IMAGES = 2000


def train(model: TinyNet, data: util.ImageSet, epochs: int, lr: float, batch_size: int,
          generator: torch.Generator, label: str) -> None:
    """Adam with a cosine schedule on augmented (crop, flip at 32x32, then downsampled) images."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(data) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss_of = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        start, total, seen = time.time(), 0.0, 0
        order = torch.randperm(len(data), generator=generator)
        for first in range(0, len(data), batch_size):
            index = order[first:first + batch_size]
            images = to_input(downsample(util.augment(data.images[index], generator)))
            loss = loss_of(model(images), data.labels[index].long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(index), seen + len(index)
        print(f"{label} epoch {epoch + 1}/{epochs}: loss {total / seen:.3f} ({time.time() - start:.0f} s)",
              flush=True)


@torch.no_grad()
def accuracy(model: TinyNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predicted = torch.cat([model(to_input(images[i:i + 1000])).argmax(1) for i in range(0, len(images), 1000)])
    return 100.0 * float((predicted == labels).float().mean())


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--saves-dir", default="saves/mcu", type=Path)
    parser.add_argument("--board", default=MCU_DEFAULT_BOARD, choices=sorted(MCU_BOARDS))
    parser.add_argument("--channels", default=",".join(map(str, DEFAULT_CHANNELS)),
                        help="output channels of the conv layers before pruning (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=3, help="after pruning to the budget")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--subset", type=int, help="train on the first N training images only")
    parser.add_argument("--check-images", type=int, default=300,
                        help="test images the C code must predict exactly like Python (default %(default)s)")
    parser.add_argument("--float-reference", action="store_true",
                        help="also train the same shape with float weights, for comparison")
    args = parser.parse_args(argv)
    try:
        args.channels = tuple(int(c) for c in args.channels.split(","))
        if not args.channels or min(args.channels) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--channels takes positive integers separated by commas, e.g. 16,32,32; got {args.channels!r}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    board = MCU_BOARDS[args.board]
    generator = util.set_seed(args.seed)
    try:
        train_set = util.load_cifar10(args.data_dir, train=True).subset(args.subset)
        test_set = util.load_cifar10(args.data_dir, train=False)
    except util.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    test_images, test_labels = downsample(test_set.images), test_set.labels.long()
    results = {"command": " ".join(["python mcu_train.py", *(argv if argv is not None else sys.argv[1:])]),
               "board": board.name, "channels_before_pruning": list(args.channels), "test_images": len(test_labels)}
    if args.float_reference:
        shape = TinyNet(args.channels)
        fit_to_budget(shape, board)   # the channel counts only depend on the shapes, not on training
        reference = TinyNet(shape.channels, binary=False)
        train(reference, train_set, args.epochs + (args.finetune_epochs if shape.channels != list(args.channels)
                                                   else 0), args.lr, args.batch_size, generator, "float")
        results["float_channels"] = reference.channels
        results["float_accuracy"] = accuracy(reference, test_images, test_labels)
        print(f"float weights, {reference.channels}: {results['float_accuracy']:.2f}%")
    model = TinyNet(args.channels)
    train(model, train_set, args.epochs, args.lr, args.batch_size, generator, "binary")
    results["binary_accuracy_before_pruning"] = accuracy(model, test_images, test_labels)
    print(f"binary weights, {args.channels}: {results['binary_accuracy_before_pruning']:.2f}%")
    removed = fit_to_budget(model, board)
    results["removed_channels"] = removed
    results["channels"] = model.channels
    if removed:
        print(f"pruned {len(removed)} channels to fit {board.name}: channels now {model.channels}")
        train(model, train_set, args.finetune_epochs, args.lr / 4, args.batch_size, generator, "fine-tune")
    results["binary_accuracy"] = accuracy(model, test_images, test_labels)
    budget = check(model.shapes(), board)
    print(budget.report())
    results["estimate"] = {"flash": budget.flash, "sram": budget.sram, "latency_s": budget.latency,
                           "fits": budget.fits}
    layers = integerize(model, downsample(train_set.images[:CALIBRATION_IMAGES]))
    logits = integer_logits(layers, test_images)
    results["integer_accuracy"] = 100.0 * float((logits.argmax(1) == test_labels.numpy()).mean())
    print(f"binary model {results['binary_accuracy']:.2f}% in float arithmetic, "
          f"{results['integer_accuracy']:.2f}% in the integer arithmetic of the C code")
    header = write_header(layers, args.saves_dir / "mcu_model.h")
    checked = test_images[:args.check_images]
    try:
        c_logits = toolchain.host_logits(layers, checked)
        results["c_agrees"] = {"images": len(checked), "same_logits": int((c_logits == logits[:len(checked)])
                                                                          .all(axis=1).sum())}
        print(f"host gcc build: the same logits as Python on {results['c_agrees']['same_logits']} of "
              f"{len(checked)} test images")
    except toolchain.ToolMissing as missing:
        print(f"C check skipped: {missing}")
    if toolchain.avr_available():
        measured = toolchain.avr_measure(layers, test_images[0])
        macs = sum(layer.macs for layer in model.shapes())
        results["avr"] = {"flash": measured.flash, "text": measured.text, "data": measured.data, "bss": measured.bss,
                          "stack": measured.stack, "sram": measured.sram, "cycles": measured.cycles,
                          "macs": macs, "fits_uno": measured.fits("uno"),
                          "simavr_class_matches_python": measured.predicted == int(logits[0].argmax())}
        print(measured.report(macs))
    else:
        print("AVR measurement skipped: avr-gcc, avr-size and simavr are not all installed "
              "(Debian: apt-get install gcc-avr avr-libc binutils-avr simavr); the budget above is an estimate")
    args.saves_dir.mkdir(parents=True, exist_ok=True)
    (args.saves_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {header} and {args.saves_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
