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


# --------------------------------------------------------------------------- Part 2 (deploy/)

SCORES = "deploy/channels.py: filter_scores"
KEEP = "deploy/channels.py: channels_to_keep"
FLATTEN = "deploy/channels.py: flattened_features"
REMOVE = "deploy/channels.py: remove_channels"
SCHEDULES = "deploy/channels.py: schedules"
SVD = "deploy/lowrank.py: truncated_svd"
ENERGY = "deploy/lowrank.py: rank_for_energy"
FACTOR_CONV = "deploy/lowrank.py: factorize_conv"
KD = "deploy/distill.py: distillation_loss"
BROKEN = "deploy/optimiser.py: broken_constraints"
RANKING = "deploy/optimiser.py: ranking_key"
CHOOSE = "deploy/optimiser.py: choose"
CALIBRATE = "deploy/int8.py: calibrate"
STATIC = "deploy/int8.py: quantize_static"
DYNAMIC = "deploy/int8.py: quantize_linears"
TRAIN_QAT = "deploy/int8.py: train_qat"
QAT = "deploy/int8.py: quantize_qat"
CAPTURE = "deploy/capture.py: capture"
EQUIVALENT = "deploy/capture.py: check_equivalent"
EXPORT = "deploy/onnx_int8.py: export_onnx"
READER = "deploy/onnx_int8.py: BatchReader.get_next"
ORT_INT8 = "deploy/onnx_int8.py: quantize_onnx"
AGREEMENT = "deploy/onnx_int8.py: agreement"

DEPLOY_BUGS: Tuple[Bug, ...] = (
    Bug("l2_without_sqrt", "channels", SCORES,
        "the L2 score is the sum of squares, without the square root.",
        [("    return rows.abs().sum(dim=1) if norm == \"l1\" else rows.pow(2).sum(dim=1).sqrt()\n",
          "    return rows.abs().sum(dim=1) if norm == \"l1\" else rows.pow(2).sum(dim=1)\n")]),
    Bug("keep_smallest_channels", "channels", KEEP,
        "channels_to_keep keeps the channels with the smallest scores.",
        [("    order = torch.sort(scores, descending=True, stable=True).indices[:count]\n",
          "    order = torch.sort(scores, descending=False, stable=True).indices[:count]\n")]),
    Bug("kept_channels_unsorted", "channels", KEEP,
        "channels_to_keep returns the kept indices by score, not in increasing order.",
        [("    return torch.sort(order).values\n", "    return order\n")]),
    Bug("flatten_position_major", "channels", FLATTEN,
        "a wrong flatten index map behind conv5: features listed position by position instead of channel by channel.",
        [("    return (channels[:, None] * side_area + torch.arange(side_area)).reshape(-1)\n",
          "    return (channels[None, :] * side_area + torch.arange(side_area)[:, None]).reshape(-1)\n")]),
    Bug("consumer_not_repaired", "channels", REMOVE,
        "remove_channels shrinks the layer but leaves its consumer reading the old number of channels.",
        [("    outputs = torch.arange(consumer.weight.shape[0])\n"
          "    if isinstance(consumer, nn.Conv2d):\n"
          "        setattr(model, consumer_name, smaller_conv(consumer, outputs, keep_index))\n"
          "    elif isinstance(layer, nn.Conv2d):\n"
          "        side_area = consumer.in_features // layer.out_channels\n"
          "        setattr(model, consumer_name, smaller_linear(consumer, outputs, flattened_features(keep_index, side_area)))\n"
          "    else:\n"
          "        setattr(model, consumer_name, smaller_linear(consumer, outputs, keep_index))\n", "")]),
    Bug("fc1_inputs_as_channels", "channels", REMOVE,
        "behind the flatten, fc1 keeps the input columns numbered like the kept channels, not their features.",
        [("        setattr(model, consumer_name, smaller_linear(consumer, outputs, flattened_features(keep_index, side_area)))\n",
          "        setattr(model, consumer_name, smaller_linear(consumer, outputs, keep_index))\n")]),
    Bug("cubic_inside_out", "channels", SCHEDULES,
        "the cubic schedule computes 1 - t**3 instead of (1 - t)**3.",
        [("    return final + (1.0 - final) * (1.0 - t) ** 3\n", "    return final + (1.0 - final) * (1.0 - t ** 3)\n")]),
    Bug("svd_of_transposed", "lowrank", SVD,
        "the SVD is taken of the transposed matrix and its factors used as if it were not.",
        [("    U, s, Vh = torch.linalg.svd(matrix, full_matrices=False)\n",
          "    U, s, Vh = torch.linalg.svd(matrix.T, full_matrices=False)\n")]),
    Bug("svd_smallest_kept", "lowrank", SVD,
        "the wrong singular vectors are kept: those of the smallest singular values.",
        [("    root = s[:rank].sqrt()\n"
          "    return U[:, :rank] * root, root[:, None] * Vh[:rank]\n",
          "    root = s[-rank:].sqrt()\n"
          "    return U[:, -rank:] * root, root[:, None] * Vh[-rank:]\n")]),
    Bug("svd_columns_of_vh", "lowrank", SVD,
        "the right factor takes columns of Vh instead of its rows.",
        [("    return U[:, :rank] * root, root[:, None] * Vh[:rank]\n",
          "    return U[:, :rank] * root, root[:, None] * Vh[:, :rank].T\n")]),
    Bug("energy_of_values", "lowrank", ENERGY,
        "the energy is counted with the singular values instead of their squares.",
        [("    squares = singular_values.double() ** 2\n", "    squares = singular_values.double()\n")]),
    Bug("conv_filters_as_columns", "lowrank", FACTOR_CONV,
        "factorize_conv views the weight as (in * k * k, out) and transposes it: the filters' entries are mixed up.",
        [("    matrix = layer.weight.detach().reshape(out, channels * height * width)\n",
          "    matrix = layer.weight.detach().reshape(channels * height * width, out).T\n")]),
    Bug("kd_temperature_not_squared", "distill", KD,
        "the soft term is not multiplied by T**2.",
        [("    return alpha * soft * temperature ** 2 + (1.0 - alpha) * hard\n",
          "    return alpha * soft + (1.0 - alpha) * hard\n")]),
    Bug("kd_mean_reduction", "distill", KD,
        "the KL divergence is averaged over classes too (reduction='mean' instead of 'batchmean').",
        [('reduction="batchmean")\n', 'reduction="mean")\n')]),
    Bug("kd_teacher_not_softened", "distill", KD,
        "the teacher's probabilities are taken at temperature 1.",
        [("    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)\n",
          "    teacher = F.softmax(teacher_logits.detach(), dim=1)\n")]),
    Bug("calibrate_first_batch_only", "int8", CALIBRATE,
        "calibrate stops after the first batch.",
        [("        prepared(images)\n        count += 1\n", "        prepared(images)\n        count += 1\n        break\n")]),
    Bug("calibration_never_run", "int8", STATIC,
        "quantize_static converts the observed model without running the calibration batches.",
        [("    calibrate(prepared, batches)\n", "")]),
    Bug("dynamic_float16", "int8", DYNAMIC,
        "quantize_linears asks for float16 weights instead of INT8.",
        [("    return legacy_quant.quantize_dynamic(model, (nn.Linear,), torch.qint8)\n",
          "    return legacy_quant.quantize_dynamic(model, (nn.Linear,), torch.float16)\n")]),
    Bug("qat_gradients_accumulate", "int8", TRAIN_QAT,
        "train_qat never zeroes the gradients, so every step adds up the gradients of all the batches so far.",
        [("        optimizer.zero_grad()\n        loss = F.cross_entropy(prepared(images), labels)\n",
          "        loss = F.cross_entropy(prepared(images), labels)\n")]),
    Bug("qat_step_before_backward", "int8", TRAIN_QAT,
        "train_qat steps the optimizer before backward: each step uses the previous batch's gradients.",
        [("        loss.backward()\n        optimizer.step()\n", "        optimizer.step()\n        loss.backward()\n")]),
    Bug("qat_never_trains", "int8", QAT,
        "quantize_qat converts the prepared copy without training it (the observers never see data either).",
        [("        train_qat(prepared, batches, optimizer)\n", "        pass\n")]),
    Bug("qat_observers_frozen_first", "int8", QAT,
        "quantize_qat freezes the observers before the first epoch, so the scales never leave their initial values.",
        [("        if epoch == epochs - 1 and epoch > 0:\n            legacy_quant.freeze_observers(prepared)\n",
          "        if epoch == 0:\n            legacy_quant.freeze_observers(prepared)\n")]),
    Bug("qat_trains_the_original", "int8", QAT,
        "quantize_qat gives the optimizer the original model's parameters: the prepared copy is never updated.",
        [("    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=0.9)\n",
          "    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)\n")]),
    Bug("capture_fixed_batch", "capture", CAPTURE,
        "capture leaves out dynamic_shapes: the graph only runs on the example's batch size.",
        [("    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},))\n",
          "    return torch.export.export(model.eval(), (example,))\n")]),
    Bug("capture_returns_module", "capture", CAPTURE,
        "capture returns the program's module (program.module()) instead of the ExportedProgram itself.",
        [("    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},))\n",
          "    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: BATCH},)).module()\n")]),
    Bug("equivalent_allclose", "capture", EQUIVALENT,
        "check_equivalent compares with torch.allclose at a loose tolerance, so it calls a changed graph equal.",
        [("        equal = equal and torch.equal(a, b)\n",
          "        equal = equal and torch.allclose(a, b, rtol=1e-3, atol=1e-4)\n")]),
    Bug("equivalent_first_input", "capture", EQUIVALENT,
        "check_equivalent runs the captured graph on the first batch every time, not on the batch the model saw.",
        [("        a, b = model(x), captured(x)\n", "        a, b = model(x), captured(inputs[0])\n")]),
    Bug("equivalent_last_batch_only", "capture", EQUIVALENT,
        "check_equivalent keeps only the last batch's verdict and difference instead of all of them.",
        [("        equal = equal and torch.equal(a, b)\n        largest = max(largest, float((a - b).abs().max()))\n",
          "        equal = torch.equal(a, b)\n        largest = float((a - b).abs().max())\n")]),
    Bug("export_fixed_batch", "onnx", EXPORT,
        "export_onnx fixes the batch size to the example's.",
        [("                      dynamic_shapes=({0: torch.export.Dim(\"batch\")},), verbose=False)\n",
          "                      verbose=False)\n")]),
    Bug("reader_skips_first", "onnx", READER,
        "get_next moves on before reading, so it hands out batches 2, 3, 1 and never the first one first.",
        [("        return {self.input_name: self.batches[self.position - 1]}\n",
          "        return {self.input_name: self.batches[self.position % len(self.batches)]}\n")]),
    Bug("onnx_per_tensor", "onnx", ORT_INT8,
        "quantize_onnx asks for one scale per tensor where per-channel was asked.",
        [("    quantize_static(str(float_path), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,\n",
          "    quantize_static(str(float_path), str(int8_path), reader, quant_format=QuantFormat.QDQ, per_channel=False,\n")]),
    Bug("agreement_mean_diff", "onnx", AGREEMENT,
        "agreement reports the mean absolute logit difference instead of the largest.",
        [('"max_abs_diff": float((reference - logits).abs().max().item())}\n',
          '"max_abs_diff": float((reference - logits).abs().mean().item())}\n')]),
    Bug("limits_exclusive", "optimiser", BROKEN,
        "a candidate exactly at a limit is refused (>= where the limits are inclusive).",
        [("    if constraints.max_accuracy_drop is not None and drop > constraints.max_accuracy_drop:\n",
          "    if constraints.max_accuracy_drop is not None and drop >= constraints.max_accuracy_drop:\n"),
         ('    if constraints.max_bytes is not None and row["bytes"] > constraints.max_bytes:\n',
          '    if constraints.max_bytes is not None and row["bytes"] >= constraints.max_bytes:\n'),
         ('    if constraints.max_latency_ms is not None and row["latency_ms"] > constraints.max_latency_ms:\n',
          '    if constraints.max_latency_ms is not None and row["latency_ms"] >= constraints.max_latency_ms:\n')]),
    Bug("drop_sign_flipped", "optimiser", BROKEN,
        "the accuracy drop is computed as the row's accuracy minus the reference's.",
        [('    drop = reference["accuracy"] - row["accuracy"]\n', '    drop = row["accuracy"] - reference["accuracy"]\n')]),
    Bug("balanced_arithmetic_mean", "optimiser", RANKING,
        "balanced ranks by the arithmetic mean of the two ratios instead of their geometric mean.",
        [('        return (math.sqrt(ratio * size / reference["bytes"]), -accuracy)\n',
          '        return ((ratio + size / reference["bytes"]) / 2, -accuracy)\n')]),
    Bug("accuracy_not_negated", "optimiser", RANKING,
        "the accuracy target puts the least accurate row first (the accuracy is not negated).",
        [("        return (-accuracy, ratio, size)\n", "        return (accuracy, ratio, size)\n")]),
    Bug("choose_ignores_constraints", "optimiser", CHOOSE, "choose ranks every row, constraints or not.",
        [("    allowed = [row for row in rows if not broken_constraints(row, reference, constraints)]\n",
          "    allowed = list(rows)\n")]),
    Bug("drop_from_most_accurate", "optimiser", CHOOSE,
        "choose measures the drop from the most accurate row instead of rows[0], the reference.",
        [("    reference = rows[0]\n    allowed", "    reference = max(rows, key=lambda row: row[\"accuracy\"])\n    allowed")]),
    Bug("ties_by_position", "optimiser", CHOOSE, "rows whose keys tie are told apart by their position, not their name.",
        [('    return min(allowed, key=lambda row: (ranking_key(row, reference, target), row["name"]))\n',
          "    return min(allowed, key=lambda row: ranking_key(row, reference, target))\n")]),
)
"""Part 2's variants; ``bug``, ``variant_files`` and ``apply`` find them by name like Part 1's."""


# --------------------------------------------------------------------------- the microcontroller track (mcu/)

BINARIZE = "mcu/binary.py: binarize"
STE = "mcu/binary.py: SignSTE.backward"
PACK = "mcu/binary.py: pack_signs"
FLASH = "mcu/budget.py: flash_bytes"
SRAM = "mcu/budget.py: sram_bytes"
LATENCY = "mcu/budget.py: latency_s"
FIT = "mcu/prune.py: fit_to_budget"

MCU_BUGS: Tuple[Bug, ...] = (
    Bug("scale_per_tensor", "binary", BINARIZE, "one scale (mean |W| of the whole tensor) instead of one per channel.",
        [("    alpha = channel_scales(weight.detach()).reshape(-1, *([1] * (weight.dim() - 1)))\n",
          "    alpha = weight.detach().abs().mean()\n")]),
    Bug("scale_not_detached", "binary", BINARIZE,
        "alpha is taken from the weight itself, so gradients flow through it.",
        [("    alpha = channel_scales(weight.detach())", "    alpha = channel_scales(weight)")]),
    Bug("ste_not_clipped", "binary", STE, "the STE passes the gradient everywhere, also where |W| > 1.",
        [("        return grad_output * (weight.abs() <= 1).to(grad_output.dtype)\n", "        return grad_output\n")]),
    Bug("bits_msb_first", "binary", PACK, "weight i is packed into bit 7 - i % 8 (most significant first).",
        [("    weights = 2 ** torch.arange(8, dtype=torch.int64)\n",
          "    weights = 2 ** torch.arange(7, -1, -1, dtype=torch.int64)\n")]),
    Bug("flash_without_scales", "budget", FLASH, "the flash budget forgets the scales and biases.",
        [("    return sum(layer.packed_weight_bytes + layer.out_channels * (SCALE_BYTES + BIAS_BYTES)\n",
          "    return sum(layer.packed_weight_bytes + 0 * (SCALE_BYTES + BIAS_BYTES)\n")]),
    Bug("sram_sum_not_max", "budget", SRAM,
        "the SRAM peak adds up every layer's activations instead of the largest pair.",
        [("    return max(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n",
          "    return sum(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n")]),
    Bug("sram_output_only", "budget", SRAM, "the SRAM peak counts each layer's output only, not its live input.",
        [("    return max(layer.in_bytes + layer.out_bytes for layer in layers) + reserve\n",
          "    return max(layer.out_bytes for layer in layers) + reserve\n")]),
    Bug("latency_in_cycles", "budget", LATENCY, "latency_s returns cycles, not seconds.",
        [("    return sum(layer.macs for layer in layers) * board.cycles_per_mac / board.clock_hz\n",
          "    return sum(layer.macs for layer in layers) * board.cycles_per_mac\n")]),
    Bug("fit_prunes_strongest", "fit", FIT, "fit_to_budget removes the most important channel instead of the weakest.",
        [("        channel = int(model.channel_importance(index).argmin())\n",
          "        channel = int(model.channel_importance(index).argmax())\n")]),
)
"""The microcontroller track's variants (``tests/test_mcu_suite.py`` grades each one); found by name like the others."""


def names() -> List[str]:
    """The names of all the variants, in the order of ``BUGS`` (by part, then by TODO)."""
    return [entry.name for entry in BUGS]


def deploy_names() -> List[str]:
    """The names of Part 2's variants, in the order of ``DEPLOY_BUGS``."""
    return [entry.name for entry in DEPLOY_BUGS]


def mcu_names() -> List[str]:
    """The names of the microcontroller track's variants, in the order of ``MCU_BUGS``."""
    return [entry.name for entry in MCU_BUGS]


def bug(name: str) -> Bug:
    """The variant called ``name`` (of either part); a ``KeyError`` lists the known names."""
    for candidate in BUGS + DEPLOY_BUGS + MCU_BUGS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no buggy variant {name!r}; the variants are {', '.join(names() + deploy_names() + mcu_names())}")


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

