"""The staff's small search for Part 2: how many channels to keep, and how long and fast to distil.

    cd solutions && python ../staff/deploy_search.py --data-dir D --teacher MODEL --out DIR \
        [--configs "0.5/0.25,0.5/0.5"] [--epochs 3] [--lr 0.01]

Each config ``CONV/FC`` keeps the fraction ``CONV`` of the channels of conv2-conv5
and ``FC`` of the hidden units of fc1 and fc2 (``deploy/channels.py``), then
fine-tunes the result against the teacher with distillation
(``deploy/distill.py``: SGD with momentum 0.9, cosine learning rate over
``--epochs``). Training uses the first ``50,000 - --val-size`` training images;
the choice is made on the last ``--val-size`` (a validation split: the test set
is not looked at). One line of JSON per config and epoch goes to
``DIR/search.jsonl``; the state after every epoch goes to ``DIR/search_<config>.pt``,
so a stopped run resumes where it was.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
sys.path.insert(0, str(SOLUTIONS))

import util  # noqa: E402  (the handout's modules, from solutions/)
from deploy import channels, distill  # noqa: E402

CONVS, FCS = ("conv2", "conv3", "conv4", "conv5"), ("fc1", "fc2")


def pruned(teacher: torch.nn.Module, conv: float, fc: float) -> torch.nn.Module:
    """A channel-pruned copy of ``teacher``; its dropout scaled by sqrt(fc) as Han et al. (2015) do."""
    student = copy.deepcopy(teacher)
    channels.prune_channels(student, {**dict.fromkeys(CONVS, conv), **dict.fromkeys(FCS, fc)})
    student.dropout = teacher.dropout * fc ** 0.5
    return student


def search_one(tag: str, conv: float, fc: float, teacher, train_set, val_set, args, log) -> None:
    """Distil one config for ``args.epochs`` epochs, resuming from its saved state."""
    state_path = Path(args.out) / f"search_{tag}.pt"
    student = pruned(teacher, conv, fc)
    optimizer = torch.optim.SGD(student.parameters(), lr=args.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)
    generator = util.set_seed(args.seed)
    done = 0
    cpu = torch.device("cpu")
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        done = state["epoch"]
    else:
        accuracy = util.evaluate(student, val_set, cpu, progress=False)[1]
        log({"config": tag, "epoch": 0, "val_accuracy": accuracy})
    for epoch in range(done, args.epochs):
        start = time.time()
        loss = distill.distill(student, teacher, util.batches(train_set, args.batch_size, cpu, True, generator),
                               optimizer)
        schedule.step()
        accuracy = util.evaluate(student, val_set, cpu, progress=False)[1]
        torch.save({"model": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "generator": generator.get_state(), "epoch": epoch + 1},
                   state_path)
        log({"config": tag, "epoch": epoch + 1, "loss": loss, "val_accuracy": accuracy,
             "seconds": round(time.time() - start, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--teacher", required=True, help="the dense Part 1 model (.ptmodel, torch.save of the model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--configs", default="0.5/0.25,0.5/0.5,0.35/0.25,0.25/0.25")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    everything = util.load_cifar10(args.data_dir, train=True)
    cut = len(everything) - args.val_size
    train_set = util.ImageSet(everything.images[:cut], everything.labels[:cut])
    val_set = util.ImageSet(everything.images[cut:], everything.labels[cut:])
    teacher = util.load_model(args.teacher).eval()

    def log(record: dict) -> None:
        record["lr"] = args.lr
        print(json.dumps(record), flush=True)
        with open(Path(args.out) / "search.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    log({"config": "teacher", "epoch": 0, "val_accuracy": util.evaluate(teacher, val_set, torch.device("cpu"),
                                                                         progress=False)[1]})
    for config in args.configs.split(","):
        conv, fc = (float(x) for x in config.split("/"))
        search_one(f"{conv}_{fc}_lr{args.lr}", conv, fc, teacher, train_set, val_set, args, log)


if __name__ == "__main__":
    main()
