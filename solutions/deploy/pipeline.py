"""Part 2, end to end: make the model fast, not only small.

    python -m deploy.pipeline --data-dir DATA [--model saves/model_after_retraining.ptmodel]

Starts from a Part 1 model (or, without ``--model``, an untrained AlexNet,
which only shows that the steps run), then: removes channels
(``deploy/channels.py``), fine-tunes against the original model with
distillation (``deploy/distill.py``), factorises fc1 and fc2 (``deploy/lowrank.py``),
quantises to INT8 in PyTorch (``deploy/int8.py``) and exports to ONNX and
ONNX Runtime INT8 (``deploy/onnx_int8.py``). It prints one line per variant:
test accuracy, parameters and the exact bytes of the saved file, and writes
the files to ``SAVES/deploy/``. A step whose TODO is not written yet is
skipped with a note saying which TODO; the others still run.
"""
import copy
import io
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn as nn

import util
from deploy import channels, distill, int8, lowrank, onnx_int8
from net.models import AlexNet

CHANNEL_LAYERS = ("conv2", "conv3", "conv4", "conv5", "fc1", "fc2")


def saved_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what the file on disk holds."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def parameters(model: nn.Module) -> int:
    """Float parameters, plus the elements of INT8 packed weights (which are not parameters)."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, nn.Parameter):
            count += weight().numel()
    return count


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


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--model", help="the Part 1 model to start from (a .ptmodel written by torch.save)")
    parser.add_argument("--keep-channels", type=float, default=0.5,
                        help=f"fraction of the channels of {', '.join(CHANNEL_LAYERS)} to keep")
    parser.add_argument("--energy", type=float, default=0.9, help="energy kept by the low-rank fc1 and fc2")
    parser.add_argument("--distill-epochs", type=int, default=1, help="epochs of fine-tuning against the original")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--backend", default="x86", choices=("x86", "fbgemm", "qnnpack"))
    args = parser.parse_args()
    if not 0.0 < args.keep_channels <= 1.0 or not 0.0 < args.energy <= 1.0:
        raise ValueError("--keep-channels and --energy must be in (0, 1]")

    torch.set_num_threads(1)  # INT8 kernels run on the CPU; one thread is what a small device has
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
    rows: List[str] = []

    def report(name: str, model: nn.Module) -> None:
        accuracy = util.evaluate(model, test_set, cpu, progress=False)[1]
        torch.save(model.state_dict(), out / f"{name}.pt")
        rows.append(f"{name:20} accuracy {accuracy:6.2f}%  parameters {parameters(model):>10,}  "
                    f"bytes {(out / f'{name}.pt').stat().st_size:>11,}")
        print(rows[-1])

    report("dense", dense)

    def prune_and_distill() -> nn.Module:
        small = copy.deepcopy(dense)
        left = channels.prune_channels(small, dict.fromkeys(CHANNEL_LAYERS, args.keep_channels))
        print(f"channels left: {left}")
        optimizer = torch.optim.SGD(small.parameters(), lr=args.lr, momentum=0.9)
        for epoch in range(args.distill_epochs):
            loss = distill.distill(small, dense, util.batches(train_set, args.batch_size, cpu, True, generator),
                                   optimizer)
            print(f"distillation epoch {epoch + 1}: loss {loss:.4f}")
        report("channel_pruned", small.eval())
        return small

    compact = step("channel pruning + distillation", prune_and_distill) or dense

    def factorise() -> nn.Module:
        factored = copy.deepcopy(compact)
        print(f"ranks: {lowrank.low_rank(factored, {'fc1': args.energy, 'fc2': args.energy})}")
        report("low_rank", factored.eval())
        return factored

    compact = step("low rank fc1, fc2", factorise) or compact
    step("INT8 static (PyTorch)", lambda: report("int8_torch", int8.quantize_static(compact, calibration,
                                                                                   args.backend)))
    step("INT8 dynamic Linears (PyTorch)", lambda: report("int8_dynamic", int8.quantize_linears(compact)))

    def onnx_runtime() -> None:
        float_path = onnx_int8.export_onnx(compact, calibration[0][:1], out / "model.onnx")
        int8_path = onnx_int8.quantize_onnx(float_path, out / "model_int8.onnx", calibration)
        images = torch.cat([images for images, _ in util.batches(test_set, 500, cpu)])
        labels = test_set.labels
        with torch.no_grad():
            reference = compact.eval()(images)
        for path in (float_path, int8_path):
            logits = onnx_int8.run_onnx(path, images)
            accuracy = 100.0 * (logits.argmax(1) == labels).double().mean().item()
            check = onnx_int8.agreement(reference, logits)
            rows.append(f"{path.stem:20} accuracy {accuracy:6.2f}%  bytes {path.stat().st_size:>11,}  "
                        f"top-1 agreement {check['top1_agreement']:.4f}, max |logit diff| {check['max_abs_diff']:.4g}")
            print(rows[-1])

    step("ONNX + ONNX Runtime INT8", onnx_runtime)
    print("--- summary (bytes: the file written to " + str(out) + ")")
    print("\n".join(rows))
    util.log(args.log, "\n".join(rows))


if __name__ == "__main__":
    util.run_main(main)
