"""Part 2, end to end: make the model fast, not only small.

    python -m deploy.pipeline --data-dir DATA [--model saves/model_after_retraining.ptmodel]

Starts from a Part 1 model (or, without ``--model``, an untrained AlexNet,
which only shows that the steps run), then: removes channels
(``deploy/channels.py``), fine-tunes against the original model with
distillation (``deploy/distill.py``), factorises fc1 and fc2 where that saves
work (``deploy/lowrank.py``), quantises to INT8 in PyTorch (``deploy/int8.py``:
static, dynamic, and quantisation-aware training), captures the graph with
``torch.export`` and checks it computes exactly what the model does
(``deploy/capture.py``), and exports to ONNX and ONNX Runtime INT8
(``deploy/onnx_int8.py``). Every
variant is saved to ``SAVES/deploy/`` and measured by ``deploy/report.py``
(accuracy, exact bytes, parameters, MACs, latency at one thread against the
dense model, where the time goes); one line per variant is printed and the
whole report written to ``SAVES/deploy/report/``. A step whose TODO is not
written yet is skipped with a note saying which TODO; the others still run.
Fine-tuning saves its state after every epoch (``SAVES/deploy/*_state.pt``)
and a rerun with the same flags resumes from it.
"""
import copy
import itertools
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

import util
from deploy import capture, channels, distill, int8, lowrank, onnx_int8, report
from net.models import AlexNet

CHANNEL_LAYERS = ("conv2", "conv3", "conv4", "conv5", "fc1", "fc2")
LOW_RANK_LAYERS = ("fc1", "fc2")


def step(title: str, work: Callable[[], Optional[nn.Module]]) -> Optional[nn.Module]:
    """Run one step; a TODO not written yet (NotImplementedError) skips it with a note."""
    print(f"--- {title}")
    try:
        return work()
    except NotImplementedError as missing:
        print(f"skipped: {missing} is not written yet")
    except ImportError as error:
        print(f"skipped: {error.name} is not installed (pip install -r requirements-deploy.txt)")
    return None


def keep_fractions(text: str) -> Dict[str, float]:
    """``--keep-channels``: one fraction for every layer of ``CHANNEL_LAYERS``, or ``layer=fraction`` pairs."""
    parsed = util.per_layer("--keep-channels", text, float, "a fraction such as 0.5, or pairs such as conv2=0.5,fc1=0.25")
    keep = dict.fromkeys(CHANNEL_LAYERS, parsed) if isinstance(parsed, float) else parsed
    unknown = sorted(set(keep) - set(CHANNEL_LAYERS))
    if unknown:
        raise ValueError(f"--keep-channels: {unknown} cannot be pruned; the layers are {list(CHANNEL_LAYERS)}")
    if not all(0.0 < value <= 1.0 for value in keep.values()):
        raise ValueError("--keep-channels and --energy must be in (0, 1]")
    return keep


def helpful_ranks(model: nn.Module, energy: float) -> Dict[str, int]:
    """The rank keeping ``energy`` for each of ``LOW_RANK_LAYERS`` whose two factors are cheaper than the layer."""
    ranks = {}
    for name in LOW_RANK_LAYERS:
        weight = getattr(model, name).weight.detach()
        rank = lowrank.chosen_rank(weight, energy)
        if rank * sum(weight.shape) < weight.numel():
            ranks[name] = rank
    return ranks


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--model", help="the Part 1 model to start from (a .ptmodel written by torch.save)")
    parser.add_argument("--keep-channels", default="0.5",
                        help=f"fraction of the channels kept: one for all of {', '.join(CHANNEL_LAYERS)}, "
                             "or layer=fraction pairs (conv2=0.5,fc1=0.25; layers not named keep all)")
    parser.add_argument("--energy", type=float, default=0.9,
                        help="energy kept by the low-rank fc1 and fc2 (a layer is factorised only if that saves work)")
    parser.add_argument("--distill-epochs", type=int, default=1, help="epochs of fine-tuning against the original")
    parser.add_argument("--low-rank-epochs", type=int, default=0, help="more epochs of it after the low-rank step")
    parser.add_argument("--lr", type=float, default=0.001, help="learning rate of fine-tuning (cosine decay)")
    parser.add_argument("--qat-epochs", type=int, default=int8.QAT_EPOCHS,
                        help="passes of quantisation-aware training over its batches (the last with frozen observers)")
    parser.add_argument("--qat-batches", type=int, default=32, help="training batches quantisation-aware training uses")
    parser.add_argument("--qat-lr", type=float, default=int8.QAT_LR, help="learning rate of quantisation-aware training")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for fine-tuning (default: torch's); latency is always measured at "
                             f"{report.LATENCY_THREADS}")
    parser.add_argument("--latency-rounds", type=int, default=20, help="rounds of 10 interleaved runs per latency")
    parser.add_argument("--backend", default="x86", choices=("x86", "fbgemm", "qnnpack"))
    args = parser.parse_args()
    keep = keep_fractions(args.keep_channels)
    if not 0.0 < args.energy <= 1.0:
        raise ValueError("--keep-channels and --energy must be in (0, 1]")
    if args.qat_epochs < 1 or args.qat_batches < 1:
        raise ValueError("--qat-epochs and --qat-batches must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    generator = util.set_seed(args.seed)
    cpu = torch.device("cpu")
    train_set = util.load_cifar10(args.data_dir, train=True).subset(args.subset)
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    if args.model:
        dense = util.load_model(args.model).eval()
    else:
        print("no --model given: starting from an untrained AlexNet (accuracies are those of chance)")
        dense = AlexNet().eval()
    calibration = [images for images, _ in util.batches(train_set, args.batch_size, cpu)][:int8.CALIBRATION_BATCHES]
    out = Path(args.saves_dir) / "deploy"
    out.mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    flags = {key: value for key, value in vars(args).items() if key not in ("log", "latency_rounds", "threads")}

    def record(name: str, subject: report.Subject, path: Optional[Path] = None, **extra) -> None:
        rows.append({**report.measure(name, subject, test_set, dense, path, rounds=args.latency_rounds), **extra})
        print(report.summary_line(rows[-1]))

    def keep_model(name: str, model: nn.Module) -> nn.Module:
        record(name, model, report.save(model, out / f"{name}.pt"))
        return model

    def fine_tune(model: nn.Module, epochs: int, tag: str) -> None:
        """Distil ``model`` from the dense one for ``epochs`` epochs, resuming from ``out/<tag>_state.pt``."""
        if epochs <= 0:
            return
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        state_path, done = out / f"{tag}_state.pt", 0
        if state_path.is_file():
            state = torch.load(state_path, weights_only=False)  # our own file, written below
            if state["flags"] == flags:
                for part, saved in ((model, "model"), (optimizer, "optimizer"), (schedule, "schedule")):
                    part.load_state_dict(state[saved])
                generator.set_state(state["generator"])
                done = state["epoch"]
                print(f"resuming {tag} after epoch {done} ({state_path})")
        for epoch in range(done, epochs):
            loss = distill.distill(model, dense, util.batches(train_set, args.batch_size, cpu, True, generator),
                                   optimizer)
            schedule.step()
            print(f"{tag} epoch {epoch + 1}: loss {loss:.4f}, lr {schedule.get_last_lr()[0]:.5f}")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "generator": generator.get_state(),
                        "epoch": epoch + 1, "flags": flags}, state_path)
        model.eval()

    keep_model("dense", dense)

    def prune_and_distill() -> nn.Module:
        small = copy.deepcopy(dense)
        print(f"channels left: {channels.prune_channels(small, keep)}")
        if hasattr(small, "dropout"):  # fewer hidden units need less dropout (Han et al. 2015: sqrt of the kept)
            small.dropout = dense.dropout * math.sqrt(keep.get("fc1", 1.0))
        fine_tune(small, args.distill_epochs, "distill")
        return keep_model("channel_pruned", small.eval())

    compact = step("channel pruning + distillation", prune_and_distill) or dense

    def factorise() -> Optional[nn.Module]:
        factored = copy.deepcopy(compact)
        ranks = helpful_ranks(factored, args.energy)
        if not ranks:
            print(f"low rank at energy {args.energy} would not make fc1 or fc2 cheaper: step left out")
            return None
        print(f"ranks: {lowrank.low_rank(factored, ranks)}")
        fine_tune(factored, args.low_rank_epochs, "low_rank")
        return keep_model("low_rank", factored.eval())

    compact = step("low rank fc1, fc2", factorise) or compact
    step("INT8 static (PyTorch)", lambda: keep_model("int8_torch", int8.quantize_static(compact, calibration,
                                                                                       args.backend)))
    step("INT8 dynamic Linears (PyTorch)", lambda: keep_model("int8_dynamic", int8.quantize_linears(compact)))

    def quantisation_aware() -> nn.Module:
        labelled = list(itertools.islice(util.batches(train_set, args.batch_size, cpu), args.qat_batches))
        print(f"quantisation-aware training: {args.qat_epochs} epochs over {len(labelled)} batches, lr {args.qat_lr}")
        return keep_model("int8_qat", int8.quantize_qat(compact, labelled, args.qat_epochs, args.qat_lr,
                                                        args.backend))

    step("INT8 quantisation-aware training (PyTorch)", quantisation_aware)

    def captured() -> None:
        program = capture.capture(compact, torch.cat(calibration)[:2])  # batch 2: an example of 1 fixes the batch
        inputs = [images for images, _ in util.batches(test_set, 500, cpu)]
        check = capture.check_equivalent(compact, program.module(), inputs)
        print(f"torch.export graph: {sum(node.op == 'call_function' for node in program.graph.nodes)} operators; "
              f"exactly equal to the model on {sum(len(x) for x in inputs)} test images: {check['equal']} "
              f"(max |logit diff| {check['max_abs_diff']:.4g})")

    step("graph capture (torch.export) + exact-equivalence check", captured)

    def onnx_runtime() -> None:
        float_path = onnx_int8.export_onnx(compact, calibration[0][:1], out / "model.onnx")
        int8_path = onnx_int8.quantize_onnx(float_path, out / "model_int8.onnx", calibration)
        images = torch.cat([images for images, _ in util.batches(test_set, 500, cpu)])
        with torch.no_grad():
            reference = compact.eval()(images)
        for name, path in (("onnx", float_path), ("onnx_int8", int8_path)):
            check = onnx_int8.agreement(reference, onnx_int8.run_onnx(path, images))
            print(f"{name}: top-1 agreement with PyTorch {check['top1_agreement']:.4f}, "
                  f"max |logit diff| {check['max_abs_diff']:.4g}")
            record(name, path, agreement=check)

    step("ONNX + ONNX Runtime INT8", onnx_runtime)
    written = report.write_report(rows, out / "report")
    lines = [report.summary_line(row) for row in rows]
    print(f"--- summary (bytes: the files written to {out}; report: {written[1]})")
    print("\n".join(lines))
    util.log(args.log, "\n".join(lines))


if __name__ == "__main__":
    util.run_main(main)
