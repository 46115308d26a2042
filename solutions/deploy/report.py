"""The evaluation report of Part 2: what each variant costs and what it still gets right.

    python -m deploy.report --data-dir DATA --dense saves/model_after_retraining.ptmodel \
        [MODEL.ptmodel | MODEL.onnx ...] [--out saves/deploy/report]

(provided; ``deploy/pipeline.py`` calls it for every variant it builds). A
*subject* is a PyTorch model (float or INT8) or the path of an ONNX file, run
with ONNX Runtime. For each one ``measure`` finds:

- test accuracy, accuracy per class and the confusion matrix (row: true
  class, column: predicted class);
- size on disk: the exact bytes of the file written (``torch.save`` of the
  ``state_dict``, or the ``.onnx`` file and any external data files it names);
- parameters: the elements of the weights and biases (INT8 packed weights
  included), or of an ONNX graph's initializers without the quantisation
  scales and zero points;
- MACs (multiply-accumulates) per image, counted from the layers: a conv
  costs ``output elements * in_channels / groups * kh * kw``, a fully
  connected layer ``output elements * in_features``; ReLU, pooling and
  quantise/dequantise steps are not counted (they are well under 1%). For an
  ONNX file the same count is made from its ``Conv``, ``Gemm`` and ``MatMul``
  nodes with the shapes ONNX's shape inference gives;
- activation memory: the largest input + output of a single layer (or ONNX
  node) for one image, in the dtype it runs in, computed from the shapes (a
  lower bound on what any layer-by-layer runtime must hold at once, weights
  not included). Measuring the allocator's true peak is not reliable on the
  CPU (PyTorch's profiler and ONNX Runtime's arena do not report it);
- latency at ``LATENCY_THREADS`` thread for one image: the subject and the
  dense reference run in turns in the same process (``rounds`` rounds of
  ``per_round`` calls each, the order swapped every round), and the report
  gives the median of each and their ratio. A ratio is stable on a noisy,
  shared machine where a millisecond figure alone is not;
- where the time goes: ``profile_operators`` (``torch.profiler`` for PyTorch,
  ONNX Runtime's own profiling for ONNX), milliseconds per run by operator.

``write_report(rows, folder)`` writes ``report.json``, ``report.md`` and
PNG plots (accuracy against latency ratio and against size, with the Pareto
front; one confusion matrix per subject). The functions are small on
purpose: a search over compression settings can call ``measure`` on each
candidate and read the dictionary it returns.
"""
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

import util

Subject = Union[nn.Module, Path, str]
"""A PyTorch model, or the path of an ONNX file."""
Runner = Callable[[torch.Tensor], torch.Tensor]

LATENCY_THREADS = 1
"""Threads for every latency figure: what a small device has, and what makes ratios comparable."""
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
EXAMPLE_SHAPE = (1, 3, 32, 32)


def is_onnx(subject: Subject) -> bool:
    return isinstance(subject, (str, Path))


# --------------------------------------------------------------------------- running a subject


def runner(subject: Subject, threads: int = LATENCY_THREADS) -> Runner:
    """A function from a float batch to its logits (a float tensor), for either kind of subject."""
    if is_onnx(subject):
        from deploy.onnx_int8 import session
        running = session(Path(subject), threads)
        name = running.get_inputs()[0].name
        return lambda images: torch.from_numpy(running.run(None, {name: images.numpy().astype(np.float32)})[0])
    subject.eval()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return subject(images)
    return run


def predictions(run: Runner, data: util.ImageSet, batch_size: int = 500) -> torch.Tensor:
    """The predicted class of every image of ``data``, in order."""
    return torch.cat([run(images).argmax(1) for images, _ in util.batches(data, batch_size, torch.device("cpu"))])


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int = len(CLASSES)) -> torch.Tensor:
    """``matrix[t, p]``: how many images of true class ``t`` were predicted as ``p``."""
    index = labels.long() * classes + predicted.long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def per_class_accuracy(matrix: torch.Tensor) -> List[float]:
    """Percent of each true class predicted right (``nan`` for a class with no image)."""
    totals = matrix.sum(1).double()
    return [100.0 * float(matrix[c, c]) / float(totals[c]) if totals[c] else float("nan")
            for c in range(len(matrix))]


# --------------------------------------------------------------------------- size and counts


def save(model: nn.Module, path: Path) -> Path:
    """Write ``torch.save(model.state_dict())`` to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def bytes_on_disk(path: Path) -> int:
    """Exact bytes of ``path``; for an ONNX file, plus every external data file it refers to."""
    path = Path(path)
    total = path.stat().st_size
    if path.suffix == ".onnx":
        import onnx
        from onnx.external_data_helper import uses_external_data
        graph = onnx.load(str(path), load_external_data=False).graph
        files = {entry.value for tensor in graph.initializer if uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location"}
        total += sum((path.parent / name).stat().st_size for name in files)
    return total


def _quantisation_parameters(graph) -> set:
    """Names of the scales and zero points of a graph's QuantizeLinear/DequantizeLinear nodes."""
    return {name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
            for name in node.input[1:]}


def parameter_count(subject: Subject) -> int:
    """Weights and biases: float parameters plus INT8 packed ones, or the elements of an ONNX graph's
    initializers (without quantisation scales, zero points and INT64 shape constants)."""
    if is_onnx(subject):
        import onnx
        graph = onnx.load(str(subject)).graph
        skip = _quantisation_parameters(graph)
        return sum(int(np.prod(tensor.dims)) for tensor in graph.initializer
                   if tensor.name not in skip and tensor.data_type != onnx.TensorProto.INT64)  # INT64: shapes
    count = sum(p.numel() for p in subject.parameters())
    for module in subject.modules():
        for kind in ("weight", "bias"):
            packed = getattr(module, kind, None)
            if callable(packed) and not isinstance(packed, nn.Parameter):  # quantised layers return their tensors
                tensor = packed()
                count += tensor.numel() if tensor is not None else 0
    return count


def _is_conv(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("in_channels", "out_channels", "kernel_size", "groups"))


def _is_linear(module: nn.Module) -> bool:
    return hasattr(module, "in_features") and hasattr(module, "out_features")


def _layer_walk(model: nn.Module, example: torch.Tensor, visit: Callable[[nn.Module, tuple, object], None]) -> None:
    """Run ``example`` through ``model`` and call ``visit(layer, inputs, output)`` for every leaf layer."""
    # Quantised Linears hold their packed weights in a child module, so they are not leaves: take them too.
    leaves = [m for m in model.modules() if _is_conv(m) or _is_linear(m) or not list(m.children())]
    hooks = [m.register_forward_hook(lambda layer, inputs, output: visit(layer, inputs, output)) for m in leaves]
    try:
        runner(model)(example)
    finally:
        for hook in hooks:
            hook.remove()


def _tensor_bytes(value) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def _onnx_shapes(path: Path):
    """``(graph, {tensor name: (dims, element type)})`` for every tensor of the ONNX file, batch size 1."""
    import onnx
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]  # a free batch is 1
        shapes[info.name] = (dims, tensor.elem_type)
    for tensor in graph.initializer:
        shapes[tensor.name] = (list(tensor.dims), tensor.data_type)
    return graph, shapes


def macs(subject: Subject, example: Optional[torch.Tensor] = None) -> int:
    """Multiply-accumulates of the conv and fully connected layers for one image (see the module's text)."""
    example = torch.zeros(EXAMPLE_SHAPE) if example is None else example[:1]
    if is_onnx(subject):
        graph, shapes = _onnx_shapes(Path(subject))
        total = 0
        for node in graph.node:
            if node.op_type == "Conv":
                weight = shapes[node.input[1]][0]
                total += int(np.prod(shapes[node.output[0]][0])) * int(np.prod(weight[1:]))
            elif node.op_type in ("Gemm", "MatMul"):
                inner = shapes[node.input[0]][0][-1]
                if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
                    inner = shapes[node.input[0]][0][0]
                total += int(np.prod(shapes[node.output[0]][0])) * inner
        return total
    counted = []

    def visit(layer: nn.Module, inputs: tuple, output) -> None:
        if _is_conv(layer):
            kernel = int(np.prod(layer.kernel_size))
            counted.append(output.numel() * layer.in_channels // layer.groups * kernel)
        elif _is_linear(layer):
            counted.append(output.numel() * layer.in_features)
    _layer_walk(subject, example, visit)
    return sum(counted)


def activation_bytes(subject: Subject, example: Optional[torch.Tensor] = None) -> int:
    """The largest input + output bytes of one layer (PyTorch leaf module, or ONNX node) for one image."""
    example = torch.zeros(EXAMPLE_SHAPE) if example is None else example[:1]
    if is_onnx(subject):
        import onnx
        graph, shapes = _onnx_shapes(Path(subject))
        constants = {tensor.name for tensor in graph.initializer}
        for node in graph.node:  # computed from constants only (a weight's DequantizeLinear): folded, not live
            if all(name in constants or not name for name in node.input):
                constants.update(node.output)
        size = lambda name: (int(np.prod(shapes[name][0])) * onnx.helper.tensor_dtype_to_np_dtype(shapes[name][1]).itemsize
                             if name in shapes and name not in constants else 0)
        return max((sum(size(n) for n in list(node.input) + list(node.output)) for node in graph.node), default=0)
    largest = [0]

    def visit(layer: nn.Module, inputs: tuple, output) -> None:
        largest[0] = max(largest[0], sum(_tensor_bytes(x) for x in inputs) + _tensor_bytes(output))
    _layer_walk(subject, example, visit)
    return largest[0]


# --------------------------------------------------------------------------- time


def _one_thread(work: Callable[[], object]):
    """Run ``work`` with PyTorch at ``LATENCY_THREADS`` thread(s), then restore the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(LATENCY_THREADS)
    try:
        return work()
    finally:
        torch.set_num_threads(threads)


def latency(subject: Subject, reference: Subject, example: Optional[torch.Tensor] = None, rounds: int = 20,
            per_round: int = 10, warmup: int = 5) -> Dict[str, float]:
    """Median milliseconds per image of ``subject`` and of ``reference``, run in turns; ``ratio`` = subject / reference."""
    example = torch.zeros(EXAMPLE_SHAPE) if example is None else example[:1]

    def work() -> Dict[str, float]:
        runs = {"subject": runner(subject)}
        runs["reference"] = runs["subject"] if subject is reference else runner(reference)
        times: Dict[str, List[float]] = {key: [] for key in runs}
        for run in runs.values():
            for _ in range(warmup):
                run(example)
        for round_ in range(rounds):
            order = ("subject",) if subject is reference else ("subject", "reference")
            for key in (order if round_ % 2 == 0 else order[::-1]):
                for _ in range(per_round):
                    start = time.perf_counter()
                    runs[key](example)
                    times[key].append(time.perf_counter() - start)
        times["reference"] = times["reference"] or times["subject"]
        ms = {key: 1000.0 * statistics.median(values) for key, values in times.items()}
        return {"ms": ms["subject"], "reference_ms": ms["reference"], "ratio": ms["subject"] / ms["reference"]}
    return _one_thread(work)


def profile_operators(subject: Subject, example: Optional[torch.Tensor] = None, runs: int = 20,
                      top: int = 8) -> List[Dict[str, float]]:
    """Where one image's time goes, at ``LATENCY_THREADS`` thread: ``[{op, ms, percent}]``, largest first.

    ``ms`` is the self time per run (children not included), from
    ``torch.profiler`` or from ONNX Runtime's kernel timings.
    """
    example = torch.zeros(EXAMPLE_SHAPE) if example is None else example[:1]
    totals: Dict[str, float] = {}
    if is_onnx(subject):
        import onnxruntime as ort
        with tempfile.TemporaryDirectory() as folder:
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = LATENCY_THREADS
            options.enable_profiling, options.profile_file_prefix = True, str(Path(folder) / "ort")
            options.log_severity_level = 3
            running = ort.InferenceSession(str(subject), options, providers=["CPUExecutionProvider"])
            name = running.get_inputs()[0].name
            for _ in range(runs + 1):
                running.run(None, {name: example.numpy()})
            events = json.loads(Path(running.end_profiling()).read_text())
        for event in events:
            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                op = event["args"]["op_name"]
                totals[op] = totals.get(op, 0.0) + event["dur"] / 1000.0 / (runs + 1)
    else:
        from torch.profiler import ProfilerActivity, profile
        run = runner(subject)

        def work() -> None:
            run(example)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(runs):
                    run(example)
            for event in profiler.key_averages():
                totals[event.key] = event.self_cpu_time_total / 1000.0 / runs
        _one_thread(work)
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [{"op": op, "ms": ms, "percent": 100.0 * ms / whole} for op, ms in ranked]


# --------------------------------------------------------------------------- one row, the whole report


def measure(name: str, subject: Subject, data: util.ImageSet, dense: Subject, path: Optional[Path] = None,
            rounds: int = 20, per_round: int = 10, profile: bool = True) -> Dict[str, object]:
    """Everything the report says about ``subject`` (see the module's text), as a JSON-ready dictionary.

    ``path`` is the file the subject was saved to (an ONNX subject is its own
    file); ``dense`` is the reference its latency is compared with.
    """
    if path is None and not is_onnx(subject):
        raise ValueError(f"{name}: a PyTorch model needs the path it was saved to (report.save(model, path))")
    path = Path(subject if path is None else path)
    predicted = predictions(runner(subject), data)
    matrix = confusion_matrix(predicted, data.labels)
    timing = latency(subject, dense, rounds=rounds, per_round=per_round)
    return {
        "name": name,
        "file": str(path),
        "accuracy": 100.0 * float((predicted == data.labels).double().mean()),
        "images": len(data),
        "per_class_accuracy": per_class_accuracy(matrix),
        "confusion_matrix": matrix.tolist(),
        "bytes": bytes_on_disk(path),
        "parameters": parameter_count(subject),
        "macs": macs(subject),
        "activation_bytes": activation_bytes(subject),
        "latency_ms": timing["ms"],
        "dense_latency_ms": timing["reference_ms"],
        "latency_ratio": timing["ratio"],
        "threads": LATENCY_THREADS,
        "profile": profile_operators(subject) if profile else [],
    }


def summary_line(row: Dict[str, object]) -> str:
    """One line: accuracy, bytes, parameters, MACs and latency of a measured row."""
    return (f"{row['name']:16} accuracy {row['accuracy']:6.2f}%  bytes {row['bytes']:>11,}  "
            f"parameters {row['parameters']:>10,}  MACs {row['macs']:>11,}  "
            f"latency {row['latency_ms']:7.3f} ms = {row['latency_ratio']:.3f} x dense")


def pareto_front(rows: Sequence[Dict[str, object]], cost: str) -> List[Dict[str, object]]:
    """The rows no other row beats on both ``cost`` (lower is better) and accuracy (higher), by cost."""
    return sorted((r for r in rows if not any(o[cost] <= r[cost] and o["accuracy"] >= r["accuracy"]
                                              and (o[cost], o["accuracy"]) != (r[cost], r["accuracy"])
                                              for o in rows)), key=lambda r: r[cost])


def markdown(rows: Sequence[Dict[str, object]]) -> str:
    """The report as Markdown: the main table, accuracy per class, and each subject's top operators."""
    dense_bytes = rows[0]["bytes"]
    lines = [f"# Evaluation report ({rows[0]['images']} test images; latency: one image, "
             f"{LATENCY_THREADS} thread, median, interleaved with `{rows[0]['name']}`)", "",
             "| variant | accuracy | bytes | smaller | parameters | MACs | latency ms | latency ratio | faster "
             "| activation bytes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['accuracy']:.2f}% | {r['bytes']:,} | {dense_bytes / r['bytes']:.1f}x "
                     f"| {r['parameters']:,} | {r['macs']:,} | {r['latency_ms']:.3f} | {r['latency_ratio']:.3f} "
                     f"| {1 / r['latency_ratio']:.1f}x | {r['activation_bytes']:,} |")
    lines += ["", "## Accuracy per class (%)", "", "| variant | " + " | ".join(CLASSES) + " |",
              "|---|" + "---|" * len(CLASSES)]
    lines += [f"| {r['name']} | " + " | ".join(f"{a:.1f}" for a in r["per_class_accuracy"]) + " |" for r in rows]
    lines += ["", "## Where the time goes (self time per image by operator)", ""]
    for r in rows:
        ops = ", ".join(f"{p['op']} {p['ms']:.3f} ms ({p['percent']:.0f}%)" for p in r["profile"])
        lines.append(f"- **{r['name']}**: {ops or 'not profiled'}")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Dict[str, object]], folder: Path) -> List[Path]:
    """Accuracy against latency ratio and against bytes (with the Pareto front), and each confusion matrix."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    for cost, label, filename in (("latency_ratio", f"latency / dense latency ({LATENCY_THREADS} thread)",
                                   "accuracy_vs_latency.png"), ("bytes", "bytes on disk", "accuracy_vs_size.png")):
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.scatter([r[cost] for r in rows], [r["accuracy"] for r in rows])
        for r in rows:
            axes.annotate(r["name"], (r[cost], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = pareto_front(rows, cost)
        axes.step([r[cost] for r in front], [r["accuracy"] for r in front], where="post", alpha=0.5,
                  label="Pareto front")
        axes.set(xscale="log", xlabel=label, ylabel="test accuracy (%)")
        axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(folder / filename, dpi=120)
        plt.close(figure)
        written.append(folder / filename)
    for r in rows:
        figure, axes = plt.subplots(figsize=(5, 4.5))
        image = axes.imshow(np.array(r["confusion_matrix"]), cmap="Blues")
        axes.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), xlabel="predicted", ylabel="true",
                 title=f"{r['name']}: {r['accuracy']:.2f}%")
        axes.set_xticklabels(CLASSES, rotation=90, fontsize=7)
        axes.set_yticklabels(CLASSES, fontsize=7)
        figure.colorbar(image)
        figure.tight_layout()
        figure.savefig(folder / f"confusion_{r['name']}.png", dpi=100)
        plt.close(figure)
        written.append(folder / f"confusion_{r['name']}.png")
    return written


def write_report(rows: Sequence[Dict[str, object]], folder: Path) -> List[Path]:
    """Write ``report.json``, ``report.md`` and the plots to ``folder`` (the first row is the reference)."""
    if not rows:
        raise ValueError("nothing to report: no variant was measured")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(list(rows), indent=1) + "\n")
    (folder / "report.md").write_text(markdown(rows))
    return [folder / "report.json", folder / "report.md"] + plot(rows, folder)


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--dense", required=True, help="the reference model (a whole model saved with torch.save)")
    parser.add_argument("models", nargs="*", help="more subjects: whole PyTorch models (.ptmodel) or .onnx files")
    parser.add_argument("--out", default="saves/deploy/report", help="folder the report is written to")
    args = parser.parse_args()
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    dense = util.load_model(args.dense).eval()
    rows = [measure("dense", dense, test_set, dense, Path(args.dense))]
    for name in args.models:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"{path} does not exist")
        subject = path if path.suffix == ".onnx" else util.load_model(str(path)).eval()
        rows.append(measure(path.stem, subject, test_set, dense, path))
        print(summary_line(rows[-1]))
    print("\n".join(str(p) for p in write_report(rows, Path(args.out))))


if __name__ == "__main__":
    util.run_main(main)
