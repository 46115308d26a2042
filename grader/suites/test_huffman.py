"""Huffman coding of conv layers: ``huffman_encode_conv`` and ``huffman_decode_conv`` in net/huffmancoding.py (the 10 huffman points).

The file format is the one the TODO's docstring fixes: ``<name>_data.huff``,
``<name>_indices.huff`` and ``<name>_indptr.huff``, the CSR arrays of the
Kn*Ch kernel slices concatenated in ``param.reshape(Kn * Ch, H, W)`` order,
``indptr`` values as they are.

The tests that only encode come first: a broken decoder can crash the
interpreter (scipy trusts the ``indptr`` it is given), which costs the
tests after it.
"""
import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix

from grader.suites.common import fail_if, sparse_shared_array
from grader.suites.student import shown, write_files
from grader.worker.models import small_alexnet

pytestmark = pytest.mark.part("huffman")

ENCODE = "net/huffmancoding.py: huffman_encode_conv"
DECODE = "net/huffmancoding.py: huffman_decode_conv"
BOTH = "net/huffmancoding.py: huffman_encode_conv + huffman_decode_conv"
PARTS = ("data", "indices", "indptr")

CASES = {  # what the weight looks like: (shape (Kn, Ch, H, W), density, distinct non-zero values)
    "a sparse (6, 4, 3, 2) weight": ((6, 4, 3, 2), 0.3, 8),
    "a very sparse (4, 6, 3, 3) weight, most kernels empty": ((4, 6, 3, 3), 0.08, 16),
    "an all-zero (2, 3, 3, 3) weight": ((2, 3, 3, 3), 0.0, 4),
    "a dense (3, 2, 5, 5) weight holding a single value": ((3, 2, 5, 5), 1.0, 1),
    "a (8, 3, 1, 1) weight (1x1 kernels)": ((8, 3, 1, 1), 0.5, 4),
}


def weights():
    """``(description, array)`` for every case, always the same arrays."""
    for seed, (description, (shape, density, n_values)) in enumerate(CASES.items(), start=60):
        yield description, sparse_shared_array(shape, seed, density, n_values)


def expected_streams(param: np.ndarray):
    """The three documented arrays, built slice by slice."""
    slices = [csr_matrix(kernel) for kernel in param.reshape(-1, *param.shape[2:])]
    return {part: np.concatenate([getattr(m, part) for m in slices]) for part in PARTS}


def fmt(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(f"{v:.4g}" if np.issubdtype(values.dtype, np.floating) else str(v) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def decode_problems(description: str, decoded, param: np.ndarray):
    """A message if ``decoded`` is not exactly ``param``."""
    decoded = np.asarray(decoded)
    if decoded.shape != param.shape:
        return [f"{description}: decoding returned shape {decoded.shape}, expected {param.shape}"]
    wrong = int((decoded != param).sum())
    if wrong:
        return [f"{description}: the decoded weight differs from the original at {wrong} of {param.size} positions"]
    return []


@pytest.mark.points(2, todo=ENCODE)
def test_encode_returns_bytes_written(student):
    """huffman_encode_conv returns the number of bytes it wrote to disk."""
    problems = []
    for description, param in weights():
        returned, files = student.encode_conv(param, "conv", f"encoding {description}")
        written = sum(len(data) for data in files.values())
        if isinstance(returned, bool) or returned != written:
            problems.append(f"{description}: huffman_encode_conv returned {shown(returned)}, "
                            f"but the files it wrote hold {written} bytes")
    fail_if(problems, "The compression rate is computed from what huffman_encode_conv returns, so it must be "
                      "the bytes actually written (the sum of what huffman_encode returned for each file):")


@pytest.mark.points(2, todo=ENCODE)
def test_encode_writes_documented_streams(student, reference, tmp_path):
    """huffman_encode_conv writes the data, indices and indptr of the Kn*Ch kernel slices, in order, as documented."""
    huffman_decode = reference("net/huffman_core.py").huffman_decode
    problems = []
    for index, (description, param) in enumerate(weights()):
        _, files = student.encode_conv(param, "conv", f"encoding {description}")
        directory = write_files(files, tmp_path / f"case{index}")
        for part, expected in expected_streams(param).items():
            path = directory / f"conv_{part}.huff"
            if not path.is_file():
                problems.append(f"{description}: no file {path.name} was written")
                continue
            try:
                got = huffman_decode(path)
            except Exception:
                problems.append(f"{description}: {path.name} is not a file written by huffman_encode")
                continue
            if got.shape != expected.shape or not np.array_equal(got, expected):
                problems.append(f"{description}: {path.name} holds {got.size} values {fmt(got)}, expected "
                                f"{expected.size} values {fmt(expected)}")
    fail_if(problems, "Each of the three files holds one array: the CSR `data`, `indices` or `indptr` of every "
                      "H x W kernel slice, concatenated in the order of param.reshape(Kn * Ch, H, W), "
                      "`indptr` values as they are (H + 1 per slice):")


@pytest.mark.points(2, todo=DECODE)
def test_decode_reads_documented_streams(student, reference, tmp_path):
    """huffman_decode_conv rebuilds the weight from files in the documented format (slices in Kn*Ch order)."""
    huffman_encode = reference("net/huffman_core.py").huffman_encode
    problems = []
    for index, (description, param) in enumerate(weights()):
        directory = tmp_path / f"case{index}"
        directory.mkdir()
        for part, stream in expected_streams(param).items():
            huffman_encode(stream, directory / f"conv_{part}.huff")
        files = {path.name: path.read_bytes() for path in directory.iterdir()}
        decoded = student.decode_conv(param.shape, "conv", files, f"decoding {description}")
        problems += decode_problems(description, decoded, param)
    fail_if(problems, "Given conv_data.huff, conv_indices.huff and conv_indptr.huff in the documented format "
                      "(slice k * Ch + c holds param[k, c]), huffman_decode_conv must rebuild the weight:")


@pytest.mark.points(3, todo=BOTH)
def test_round_trip(student):
    """huffman_decode_conv gives back exactly the weight that huffman_encode_conv stored, for sparse, empty and dense layers."""
    problems = []
    for description, param in weights():
        _, files = student.encode_conv(param, "conv", f"encoding {description}")
        decoded = student.decode_conv(param.shape, "conv", files, f"decoding {description}")
        problems += decode_problems(description, decoded, param)
    fail_if(problems, "huffman_decode_conv(huffman_encode_conv(W)) must give back W exactly:")


@pytest.mark.points(1, todo=BOTH)
def test_whole_model(student):
    """huffman_encode_model Huffman codes every conv layer (none stored raw) and huffman_decode_model restores the model bit for bit."""
    model = small_alexnet(seed=70)
    for seed, (name, p) in enumerate(model.named_parameters(), start=70):
        if name.endswith("weight"):
            p.data = torch.from_numpy(sparse_shared_array(tuple(p.shape), seed, 0.3, 8))
    compressed, files = student.encode_model(model, "encoding a small model")
    problems = [f"{name}: stored raw, not Huffman coded" for name in sorted(files) if name.endswith("_raw.bin")]
    written = sum(len(data) for data in files.values())
    if isinstance(compressed, bool) or compressed != written:
        problems.append(f"the report says {shown(compressed)} compressed bytes, the files hold {written}")
    decoded = student.decode_model(small_alexnet(seed=71), files, "decoding a small model")
    originals = dict(model.named_parameters())
    for name, p in decoded.items():
        if name not in originals:
            problems.append(f"the decoded model has a parameter {name} that the model did not have")
            continue
        problems += decode_problems(name, p.numpy(), originals[name].detach().numpy())
    fail_if(problems, "Encoding a whole model and decoding it into a fresh one:")
