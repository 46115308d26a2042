"""The buggy variants: realistic student bugs, each planted as a small edit of the current reference solution.

The suites must take points from every one of them (``tests/test_suites.py``),
and ``python -m grader demo`` hands three of them in as students. A variant is
not a copy of a solution file: it is the solution file as it is today with a
few exact find -> replace edits applied, so a variant always carries the
current code around its bug. When a solution changes under an edit, applying
that variant raises ``AnchorError`` naming the bug, the file and the text it
looked for, and a test fails instead of a stale copy passing quietly.

To add a bug, add one ``Bug`` to ``BUGS``: its file is the one named by its
TODO, and each edit's ``find`` text must occur exactly once in that file (take
whole lines, with enough of them to be unique).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"

Edit = Tuple[str, str]
"""``(find, replace)``: exact text of the solution file and what the bug puts in its place."""


@dataclass(frozen=True)
class Bug:
    """One buggy variant: the part and TODO that must lose points, what is wrong, and the edits that plant it."""

    name: str
    part: str
    todo: str
    """``"<student file>: <function> ..."``, as the suites name their TODOs; the edits apply to that file."""
    description: str
    edits: Sequence[Edit]

    @property
    def file(self) -> str:
        """The edited student file, relative to the solutions (the part of the TODO before ``": "``)."""
        return self.todo.split(": ")[0]


class AnchorError(ValueError):
    """An edit's ``find`` text does not occur exactly once in the current solution file."""


PRUNE = "net/prune.py: _prune"
STD = "net/prune.py: prune_by_std"
PERCENTILE = "net/prune.py: prune_by_percentile"
GRADIENTS = "pruning.py: zero_pruned_gradients"
WEIGHTS = "pruning.py: zero_pruned_weights"
SHARING = "net/quantization.py: apply_weight_sharing (conv layers)"
ENCODE = "net/huffmancoding.py: huffman_encode_conv"
DECODE = "net/huffmancoding.py: huffman_decode_conv"

BUGS: Tuple[Bug, ...] = (
    Bug("prune_le_threshold", "prune", PRUNE,
        "_prune also zeroes weights exactly at the threshold (<= instead of <).",
        [("        weights.masked_fill_(weights.abs() < threshold, 0.0)\n",
          "        weights.masked_fill_(weights.abs() <= threshold, 0.0)\n")]),
    Bug("prune_without_abs", "prune", PRUNE,
        "_prune compares the signed weight with the threshold, so every negative weight goes.",
        [("        weights.masked_fill_(weights.abs() < threshold, 0.0)\n",
          "        weights.masked_fill_(weights < threshold, 0.0)\n")]),
    Bug("prune_zeroes_bias", "prune", PRUNE,
        "_prune also prunes the bias.",
        [("        weights.masked_fill_(weights.abs() < threshold, 0.0)\n",
          "        weights.masked_fill_(weights.abs() < threshold, 0.0)\n"
          "        module.bias.data.masked_fill_(module.bias.data.abs() < threshold, 0.0)\n")]),
    Bug("std_only_fc", "prune", STD,
        "prune_by_std prunes only the fc layers (the original handout's code).",
        [("            threshold = s * module.weight.data.std().item()\n",
          "            if name not in ['fc1', 'fc2', 'fc3']:\n"
          "                continue\n"
          "            threshold = s * module.weight.data.std().item()\n")]),
    Bug("std_only_conv", "prune", STD,
        "prune_by_std prunes only the conv layers.",
        [("            threshold = s * module.weight.data.std().item()\n",
          "            if not isinstance(module, nn.Conv2d):\n"
          "                continue\n"
          "            threshold = s * module.weight.data.std().item()\n")]),
    Bug("std_of_bias", "prune", STD,
        "prune_by_std takes the std of the layer's bias instead of its weights.",
        [("            threshold = s * module.weight.data.std().item()\n",
          "            threshold = s * module.bias.data.std().item()\n")]),
    Bug("std_whole_model", "prune", STD,
        "prune_by_std uses one std computed over the weights of the whole model.",
        [("        for name, module in self.prunable_layers():\n"
          "            threshold = s * module.weight.data.std().item()\n",
          "        everything = np.concatenate([m.weight.data.cpu().numpy().ravel()\n"
          "                                     for _, m in self.prunable_layers()])\n"
          "        for name, module in self.prunable_layers():\n"
          "            threshold = s * float(everything.std())\n")]),
    Bug("percentile_only_conv", "prune", PERCENTILE,
        "prune_by_percentile prunes only the conv layers.",
        [("            if name not in keep:\n",
          "            if name not in keep or not isinstance(module, nn.Conv2d):\n")]),
    Bug("percentile_global", "prune", PERCENTILE,
        "prune_by_percentile takes the percentile over all the weights of the model, not per layer.",
        [("        for name, module in self.prunable_layers():\n"
          "            if name not in keep:\n"
          "                continue\n"
          "            magnitudes = module.weight.data.abs().cpu().numpy()\n",
          "        magnitudes = np.concatenate([m.weight.data.abs().cpu().numpy().ravel()\n"
          "                                     for _, m in self.prunable_layers()])\n"
          "        for name, module in self.prunable_layers():\n"
          "            if name not in keep:\n"
          "                continue\n")]),
    Bug("percentile_prunes_q", "prune", PERCENTILE,
        "prune_by_percentile takes the q-th percentile, so q is the percentage pruned instead of kept.",
        [("            threshold = float(np.percentile(magnitudes, 100.0 - keep[name]))\n",
          "            threshold = float(np.percentile(magnitudes, keep[name]))\n")]),
    Bug("percentile_signed", "prune", PERCENTILE,
        "prune_by_percentile takes the percentile of the signed weights, not of their absolute values.",
        [("            magnitudes = module.weight.data.abs().cpu().numpy()\n",
          "            magnitudes = module.weight.data.cpu().numpy()\n")]),
    Bug("grads_not_masked", "prune", GRADIENTS,
        "zero_pruned_gradients does nothing: only zero_pruned_weights keeps pruned weights at 0.",
        [("        if name in masks and p.grad is not None:\n"
          "            p.grad.masked_fill_(~masks[name], 0.0)\n",
          "        pass\n")]),
    Bug("grads_mask_inverted", "prune", GRADIENTS,
        "zero_pruned_gradients zeroes the gradients of the kept weights instead of the pruned ones.",
        [("            p.grad.masked_fill_(~masks[name], 0.0)\n",
          "            p.grad.masked_fill_(masks[name], 0.0)\n")]),
    Bug("weights_not_zeroed", "prune", WEIGHTS,
        "zero_pruned_weights does nothing: momentum and weight decay regrow pruned weights.",
        [("        if name in masks:\n"
          "            p.data.masked_fill_(~masks[name], 0.0)\n",
          "        pass\n")]),
    Bug("kmeans_on_zeros", "quantize", SHARING,
        "k-means runs on every weight, zeros included, and all of them are replaced.",
        [("            shared = weight.copy()\n"
          "            nonzero = shared != 0\n"
          "            shared[nonzero] = share_values(shared[nonzero], layer_bits)\n",
          "            shared = share_values(weight.reshape(-1), layer_bits).reshape(shape)\n")]),
    Bug("kmeans_bits_as_clusters", "quantize", SHARING,
        "2**bits is passed where share_values expects bits, so every weight keeps its own value.",
        [("            shared[nonzero] = share_values(shared[nonzero], layer_bits)\n",
          "            shared[nonzero] = share_values(shared[nonzero], 2 ** layer_bits)\n")]),
    Bug("kmeans_random_init", "quantize", SHARING,
        "k-means starts from k-means++ (random) centroids instead of linearly spaced ones.",
        [("            shared[nonzero] = share_values(shared[nonzero], layer_bits)\n",
          "            kmeans = KMeans(n_clusters=2 ** layer_bits, n_init=1, random_state=0)\n"
          "            kmeans.fit(shared[nonzero].reshape(-1, 1))\n"
          "            shared[nonzero] = kmeans.cluster_centers_[kmeans.labels_].reshape(-1)\n")]),
    Bug("centroids_wrong_order", "quantize", SHARING,
        "the non-zero weights are taken in Fortran (column-major) order but written back in C order.",
        [("            shared[nonzero] = share_values(shared[nonzero], layer_bits)\n",
          "            shared[nonzero] = share_values(weight.T[nonzero.T], layer_bits)\n")]),
    Bug("kmeans_per_kernel", "quantize", SHARING,
        "k-means runs separately on every kernel slice, so the layer holds far more than 2**bits values.",
        [("            shared[nonzero] = share_values(shared[nonzero], layer_bits)\n",
          "            for kernel, mask in zip(shared.reshape(-1, *shape[2:]), nonzero.reshape(-1, *shape[2:])):\n"
          "                kernel[mask] = share_values(kernel[mask], layer_bits)\n")]),
    Bug("encode_transposed_slices", "huffman", ENCODE,
        "huffman_encode_conv walks the slices channel first (Ch, Kn) instead of kernel first.",
        [("    rows = csr_matrix(param.reshape(-1, width))\n",
          "    rows = csr_matrix(param.transpose(1, 0, 2, 3).reshape(-1, width))\n")]),
    Bug("data_as_float16", "huffman", ENCODE,
        "huffman_encode_conv rounds the values to float16, so decoding cannot give them back.",
        [('    streams = {"data": rows.data, "indices": rows.indices, "indptr": slice_indptr.reshape(-1)}\n',
          '    streams = {"data": rows.data.astype(np.float16), "indices": rows.indices,\n'
          '               "indptr": slice_indptr.reshape(-1)}\n')]),
    Bug("indptr_differences", "huffman", ENCODE,
        "huffman_encode_conv stores the differences of indptr, huffman_decode_conv reads them as raw indptr.",
        [('    streams = {"data": rows.data, "indices": rows.indices, "indptr": slice_indptr.reshape(-1)}\n',
          '    streams = {"data": rows.data, "indices": rows.indices,\n'
          '               "indptr": np.diff(slice_indptr, axis=1, prepend=0).reshape(-1)}\n')]),
    Bug("size_of_arrays", "huffman", ENCODE,
        "huffman_encode_conv returns the size of the arrays, not the bytes it wrote.",
        [('    return sum(huffman_encode(stream, Path(directory) / f"{name}_{part}.huff")\n'
          "               for part, stream in streams.items())\n",
          "    for part, stream in streams.items():\n"
          '        huffman_encode(stream, Path(directory) / f"{name}_{part}.huff")\n'
          "    return sum(stream.nbytes for stream in streams.values())\n")]),
    Bug("decode_transposed_slices", "huffman", DECODE,
        "huffman_decode_conv puts the slices back in (Ch, Kn) order.",
        [("    return rows.toarray().reshape(param.shape).astype(param.dtype)\n",
          "    kn, ch = param.shape[:2]\n"
          "    return rows.toarray().reshape(ch, kn, height, width).transpose(1, 0, 2, 3).astype(param.dtype)\n")]),
)


def names() -> List[str]:
    """The names of all the variants, in the order of ``BUGS`` (by part, then by TODO)."""
    return [entry.name for entry in BUGS]


def bug(name: str) -> Bug:
    """The variant called ``name``; a ``KeyError`` lists the known names."""
    for candidate in BUGS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no buggy variant {name!r}; the variants are {', '.join(names())}")


def plant(planted: Bug, text: str) -> str:
    """``text`` (the solution file) with the edits of ``planted`` applied one after the other.

    Raises ``AnchorError`` when the ``find`` text of an edit does not occur
    exactly once in the text as it stands by then: the bug would land in the
    wrong place, or not at all.
    """
    for number, (find, replace) in enumerate(planted.edits, 1):
        count = text.count(find)
        if count != 1:
            raise AnchorError(
                f"buggy variant {planted.name!r}: edit {number} of {len(planted.edits)} looks for {find!r} in "
                f"the solution's {planted.file}, which holds it {count} times instead of once; "
                f"re-anchor that edit in grader/variants.py on the current solution")
        text = text.replace(find, replace)
    return text


def variant_files(name: str, solutions: Path = SOLUTIONS) -> Dict[str, str]:
    """``{student file: text}`` for the variant ``name``, built from the current files under ``solutions``."""
    planted = bug(name)
    return {planted.file: plant(planted, (Path(solutions) / planted.file).read_text())}


def apply(name: str, folder: Path, solutions: Path = SOLUTIONS) -> None:
    """Write the files of the variant ``name`` over their copies in ``folder`` (a copy of the solutions)."""
    for relative, text in variant_files(name, solutions).items():
        target = Path(folder) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
