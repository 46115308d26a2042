"""Per-layer sensitivity scans of a trained AlexNet, with the bytes each point costs.

    python -m grader sensitivity MODEL.ptmodel --data-dir D --out DIR [--subset 2000] [--device auto]

For each conv and fc layer *alone* (every other layer untouched):

* **prune scan**: prune the layer to each sparsity of a grid (magnitude, the
  reference ``prune_by_percentile``) and measure the test accuracy;
* **bits scan**: k-means share the layer's non-zero weights at 1..8 bits (the
  reference ``share_values``) and measure the test accuracy.

Each point also gets the bytes that layer's weight costs in the reference
Huffman format (``huffman_encode_fc`` / ``huffman_encode_conv`` into a
temporary folder). A pruned but unshared layer would store every weight as a
distinct float, which no submission does, so the prune scan's bytes are those
of the pruned layer shared at ``--bytes-bits``. Points whose layer keeps more
than ``--max-bytes-nonzeros`` weights get no bytes (the reference encoder is
slow on a dense fc2, and no submission is near there).

Accuracies are measured on a fixed subset of the test set (the first
``--subset`` images); then, for every layer and scan, the most aggressive
point within ``--tolerance`` points of the unmodified model is "chosen", and
all chosen prune points (then all chosen bit widths) applied together are
measured on the full test set; ``--confirm-each`` also measures each chosen
point alone there. Writes ``DIR/sensitivity.csv``,
``DIR/prune_scan.png`` and ``DIR/bits_scan.png``.

Loading is weights-only (``grader.safeload``), and the reference solutions are
imported under private names (``grader.reference``), so a student's ``net``
never meets ours.
"""
import argparse
import contextlib
import csv
import io
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from sklearn.exceptions import ConvergenceWarning

from grader import homework
from grader.reference import reference
from grader.safeload import SubmissionError, load_state_dict

SPARSITIES = (0, 25, 50, 70, 80, 90, 95, 97, 98, 99)
BITS = tuple(range(1, 9))
MAX_FIT = 20_000
"""k-means is fitted on at most this many values of a layer, then every value gets its nearest
centroid: sharing dense fc2 exactly takes a minute."""
MAX_BYTES_NONZEROS = 2_000_000
"""Layers with more non-zeros than this get no bytes (the reference encoder takes tens of seconds for a
dense fc2, and no submission keeps 2 million weights in one layer); ``--max-bytes-nonzeros`` lifts it."""


@dataclass
class Point:
    """One row of the CSV: a layer modified alone, its accuracy and its bytes."""

    scan: str                # "baseline", "prune", "bits", "combined-prune" or "combined-bits"
    layer: str
    setting: float           # sparsity in percent (prune) or bits (bits)
    nonzeros: int
    subset_accuracy: Optional[float]
    full_accuracy: Optional[float] = None
    weight_bytes: Optional[int] = None   # bytes of this layer's weight in the reference format
    original_bytes: Optional[int] = None
    chosen: bool = False


def load_model(path: str) -> nn.Module:
    """A reference AlexNet holding the weights of ``path`` (a pickled model or a state_dict), loaded weights-only."""
    model = reference().AlexNet()
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    model.load_state_dict(load_state_dict(path, expected))
    return model


def share_weights(weight: np.ndarray, bits: int, max_fit: int = MAX_FIT) -> np.ndarray:
    """``weight`` with its non-zero entries k-means shared at ``bits`` bits (zeros stay zero).

    Uses the reference ``share_values``; when a layer has more than
    ``max_fit`` non-zeros, the centroids are fitted on ``max_fit`` values
    evenly spaced in sorted order (from a strided sample, min and max
    included) and every value is then assigned its nearest centroid.
    """
    shared = weight.copy()
    nonzero = shared != 0
    values = shared[nonzero]
    with warnings.catch_warnings():  # k-means warns when a layer has fewer distinct values than clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        if values.size <= max_fit:
            shared[nonzero] = reference().quantization.share_values(values, bits)
            return shared
        strided = np.sort(np.concatenate([values[::max(1, values.size // (8 * max_fit))],
                                          [values.min(), values.max()]]))
        sample = strided[np.linspace(0, strided.size - 1, max_fit).round().astype(np.int64)]
        centroids = np.unique(reference().quantization.share_values(sample, bits))
    nearest = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    shared[nonzero] = centroids[nearest]
    return shared


def weight_bytes(name: str, weight: np.ndarray) -> int:
    """Bytes the reference Huffman format writes for the weight ``weight`` of layer ``name``."""
    huffman = reference().huffman
    encode = huffman.huffman_encode_conv if weight.ndim == 4 else huffman.huffman_encode_fc
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as folder:
        return encode(weight, name, folder)


@contextlib.contextmanager
def modified(module: nn.Module, change: Callable[[nn.Module], None]) -> Iterator[np.ndarray]:
    """Apply ``change`` to ``module`` in place, yield its new weight as numpy, then restore the weight."""
    original = module.weight.data.clone()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the reference pruning prints each threshold
            change(module)
        yield module.weight.data.cpu().numpy().copy()
    finally:
        module.weight.data.copy_(original)


def set_weight(module: nn.Module, weight: np.ndarray) -> None:
    module.weight.data.copy_(torch.from_numpy(weight))


class PrefixCache:
    """Accuracy of ``model`` on fixed images when only one layer (and those after it) changed.

    The outputs of every layer of the unmodified model are computed once; to
    evaluate with layer L changed, the layers before L return their cached
    outputs instead of computing them, so only L and what follows it run.
    Valid as long as the layers before L are unmodified.
    """

    def __init__(self, model: nn.Module, data, device: torch.device, batch_size: int = 1000) -> None:
        util = reference().util
        self.model = model
        self.layers = dict(model.prunable_layers())
        self.batches = list(util.batches(data, batch_size, device))
        self.outputs: Dict[str, List[torch.Tensor]] = {name: [] for name in self.layers}
        hooks = [module.register_forward_hook(lambda m, i, o, name=name: self.outputs[name].append(o))
                 for name, module in self.layers.items()]
        try:
            self.unmodified = self.accuracy(None)
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def logits(self, changed_layer: Optional[str]) -> torch.Tensor:
        """The model's outputs when only ``changed_layer`` (None: no layer) differs from the cached model."""
        names = list(self.layers)
        frozen = names[:names.index(changed_layer)] if changed_layer else []
        self.model.eval()
        outputs = []
        for i, (images, _) in enumerate(self.batches):
            for name in frozen:
                self.layers[name].forward = lambda *args, out=self.outputs[name][i]: out
            try:
                outputs.append(self.model(images))
            finally:
                for name in frozen:
                    del self.layers[name].forward
        return torch.cat(outputs)

    def accuracy(self, changed_layer: Optional[str]) -> float:
        """Accuracy in percent when only ``changed_layer`` differs from the cached model."""
        labels = torch.cat([labels for _, labels in self.batches])
        return 100.0 * int((self.logits(changed_layer).argmax(1) == labels).sum()) / len(labels)


def scan_layers(model: nn.Module, accuracy: Callable[[str], float], baseline: float,
                sparsities: Sequence[float], bits: Sequence[int], bytes_bits: int,
                max_bytes_nonzeros: int = MAX_BYTES_NONZEROS, progress: Callable[[str], None] = print) -> List[Point]:
    """The prune and bits scans of every layer of ``model`` (see the module docstring).

    ``accuracy(layer)`` measures the model while ``layer`` alone is modified.
    Points whose layer keeps more than ``max_bytes_nonzeros`` non-zeros (0:
    no limit) get no bytes.
    """
    def size(name: str, weight: Callable[[], np.ndarray], nonzeros: int) -> Optional[int]:
        return weight_bytes(name, weight()) if not max_bytes_nonzeros or nonzeros <= max_bytes_nonzeros else None

    points = []
    for name, module in model.prunable_layers():
        original = module.weight.data.cpu().numpy().copy()
        started = time.perf_counter()
        for sparsity in sparsities:
            with modified(module, lambda m: model.prune_by_percentile({name: 100.0 - sparsity})) as pruned:
                changed = not np.array_equal(pruned, original)
                nonzeros = int(np.count_nonzero(pruned))
                points.append(Point("prune", name, sparsity, nonzeros, accuracy(name) if changed else baseline,
                                    weight_bytes=size(name, lambda: share_weights(pruned, bytes_bits), nonzeros),
                                    original_bytes=original.nbytes))
        for b in bits:
            shared = share_weights(original, b)
            nonzeros = int(np.count_nonzero(shared))
            with modified(module, lambda m: set_weight(m, shared)):
                points.append(Point("bits", name, float(b), nonzeros, accuracy(name),
                                    weight_bytes=size(name, lambda: shared, nonzeros),
                                    original_bytes=original.nbytes))
        progress(f"{name}: scanned in {time.perf_counter() - started:.1f} s")
    return points


def choose(points: List[Point], baseline: float, tolerance: float) -> None:
    """Mark, per layer and scan, the most aggressive point within ``tolerance`` points of ``baseline``."""
    for scan, most_aggressive in (("prune", max), ("bits", min)):
        for layer in dict.fromkeys(p.layer for p in points if p.scan == scan):
            good = [p for p in points if p.scan == scan and p.layer == layer
                    and p.subset_accuracy >= baseline - tolerance]
            if good:
                most_aggressive(good, key=lambda p: p.setting).chosen = True


def confirm(model: nn.Module, points: List[Point], full_accuracy: Callable[[], float],
            each: bool = False) -> List[Point]:
    """Measure the chosen points of each scan applied together on the full test set (and, with ``each``, each alone)."""
    layers = dict(model.prunable_layers())
    originals = {name: m.weight.data.clone() for name, m in layers.items()}

    def apply(point: Point) -> None:
        if point.scan == "prune":
            with contextlib.redirect_stdout(io.StringIO()):
                model.prune_by_percentile({point.layer: 100.0 - point.setting})  # q = percent kept
        else:
            set_weight(layers[point.layer], share_weights(originals[point.layer].cpu().numpy(), int(point.setting)))

    def restore() -> None:
        for name, module in layers.items():
            module.weight.data.copy_(originals[name])

    combined = []
    for scan in ("prune", "bits"):
        chosen = [p for p in points if p.scan == scan and p.chosen]
        for point in chosen if each else []:
            apply(point)
            point.full_accuracy = full_accuracy()
            restore()
        if chosen:
            for point in chosen:
                apply(point)
            nonzeros = sum(int(torch.count_nonzero(m.weight)) for m in layers.values())
            combined.append(Point(f"combined-{scan}", "+".join(p.layer for p in chosen), float("nan"),
                                  nonzeros, None, full_accuracy()))
            restore()
    return combined


def write_csv(points: List[Point], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(Point)])
        writer.writeheader()
        for point in points:
            row = {key: ("" if value is None else value) for key, value in asdict(point).items()}
            writer.writerow({**row, "setting": "" if np.isnan(point.setting) else f"{point.setting:g}"})


def plot(points: List[Point], scan: str, baseline: float, path: Path) -> None:
    """Accuracy (top) and the layer's bytes (bottom) against the scanned setting, one line per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [p for p in points if p.scan == scan]
    settings = sorted({p.setting for p in rows})
    position = {s: i for i, s in enumerate(settings)}  # evenly spaced: the grid is dense near 100%
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for layer in dict.fromkeys(p.layer for p in rows):
        mine = [p for p in rows if p.layer == layer]
        x = [position[p.setting] for p in mine]
        line, = top.plot(x, [p.subset_accuracy for p in mine], marker="o", label=layer)
        sized = [(position[p.setting], p.weight_bytes) for p in mine if p.weight_bytes is not None]
        if sized:
            bottom.plot(*zip(*sized), marker="o", color=line.get_color())
        chosen = [p for p in mine if p.chosen]
        top.scatter([position[p.setting] for p in chosen],
                    [p.subset_accuracy if p.full_accuracy is None else p.full_accuracy for p in chosen],
                    marker="*", s=150, color=line.get_color(), zorder=3)
    top.axhline(float(homework.GATE), color="red", linestyle="--", label=f"gate {float(homework.GATE):g}%")
    top.axhline(baseline, color="gray", linestyle=":", label="unmodified")
    top.set_ylabel("test accuracy (%)")
    top.legend(ncol=3, fontsize="small")
    bottom.set_yscale("log")
    bottom.set_ylabel("bytes of the layer's weight")
    bottom.set_xticks(range(len(settings)), [f"{s:g}" for s in settings])
    bottom.set_xlabel("sparsity of the layer (%)" if scan == "prune" else "bits of the layer")
    top.set_title(f"Each layer {'pruned' if scan == 'prune' else 'weight-shared'} alone "
                  f"(* chosen: within the tolerance of the unmodified model)")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_numbers(text: str) -> List[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader sensitivity", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", help="a .ptmodel (torch.save(model) of the handout's AlexNet, or its state_dict)")
    parser.add_argument("--data-dir", required=True, help="folder that holds cifar-10-batches-py/")
    parser.add_argument("--out", required=True, help="folder for sensitivity.csv and the plots")
    parser.add_argument("--subset", type=int, default=2000, help="test images of the scans (the first N)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sparsities", default=",".join(map(str, SPARSITIES)), help="percentages, comma-separated")
    parser.add_argument("--bits", default=",".join(map(str, BITS)), help="bit widths, comma-separated")
    parser.add_argument("--bytes-bits", type=int, default=4, help="bits at which the prune scan's bytes are counted")
    parser.add_argument("--max-bytes-nonzeros", type=int, default=MAX_BYTES_NONZEROS,
                        help="no bytes for points whose layer keeps more non-zeros (0: no limit)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="a chosen point loses at most this many accuracy points on the subset")
    parser.add_argument("--no-confirm", action="store_true", help="skip the full-test-set confirmations")
    parser.add_argument("--confirm-each", action="store_true",
                        help="also confirm every chosen point alone on the full test set (about 10 s each on 2 cores)")
    args = parser.parse_args(argv)

    util = reference().util
    try:
        model = load_model(args.model)
        device = util.select_device(args.device)
        test = util.load_cifar10(args.data_dir, train=False, download=False)
    except (OSError, SubmissionError, util.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model.to(device)
    test = util.ImageSet(test.images.to(device), test.labels.to(device))
    subset = test.subset(args.subset)

    def full_accuracy() -> float:
        return util.evaluate(model, test, device, batch_size=1000, progress=False)[1]

    started = time.perf_counter()
    cache = PrefixCache(model, subset, device)
    baseline = Point("baseline", "all", float("nan"), sum(int(torch.count_nonzero(m.weight))
                                                           for _, m in model.prunable_layers()),
                     cache.unmodified, full_accuracy())
    print(f"unmodified model: {baseline.subset_accuracy:.2f}% on the first {len(subset)} test images, "
          f"{baseline.full_accuracy:.2f}% on all {len(test)}")
    points = scan_layers(model, cache.accuracy, baseline.subset_accuracy, parse_numbers(args.sparsities),
                         [int(b) for b in parse_numbers(args.bits)], args.bytes_bits, args.max_bytes_nonzeros)
    del cache
    choose(points, baseline.subset_accuracy, args.tolerance)
    combined = [] if args.no_confirm else confirm(model, points, full_accuracy, args.confirm_each)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv([baseline, *points, *combined], out / "sensitivity.csv")
    for scan in ("prune", "bits"):
        plot(points, scan, baseline.subset_accuracy, out / f"{scan}_scan.png")
    for point in [p for p in points if p.chosen]:
        full = "" if point.full_accuracy is None else f", {point.full_accuracy:.2f}% on all {len(test)}"
        print(f"chosen: {point.layer} {point.scan} {point.setting:g}, {point.subset_accuracy:.2f}% on the subset{full}")
    for point in combined:
        print(f"{point.scan} ({point.layer}): {point.full_accuracy:.2f}% on all {len(test)}")
    print(f"wrote {out / 'sensitivity.csv'} and two plots in {time.perf_counter() - started:.0f} s")
    return 0
