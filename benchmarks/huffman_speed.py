"""How fast is the provided Huffman code? Ours against a plain textbook implementation, same model.

    python benchmarks/huffman_speed.py [--bits 5] [--repeat 3] [--seed 0]

Builds an AlexNet, prunes it with the course's per-layer rates
(``solutions/pruning.py``: ``DEFAULT_LAYER_KEEP``), shares its weights at
``--bits`` bits and then times, in one run:

* ours: ``huffman_encode_model`` + ``huffman_decode_model`` of the whole model
  (sparse conversion, files and biases included; best of ``--repeat``);
* textbook: the same Huffman streams (the arrays our encoder codes) coded by a
  per-symbol Python implementation: a dict of code strings such as ``'0101'``,
  encoding by joining strings, decoding bit by bit while walking the tree. It
  works in memory and skips the sparse conversion, so the ratio is, if
  anything, in the textbook version's favour.

Not a test: it prints the times and the ratio. Runs in about half a minute on 2 cores.
"""
import argparse
import contextlib
import heapq
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parent.parent / "solutions"
sys.path.insert(0, str(SOLUTIONS))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import net.huffmancoding as hc  # noqa: E402
from net.models import AlexNet  # noqa: E402
from net.quantization import apply_weight_sharing  # noqa: E402
from pruning import DEFAULT_LAYER_KEEP  # noqa: E402


# ---------------------------------------------------------------------------
# The textbook version: one Python operation per symbol or per bit
# ---------------------------------------------------------------------------

class Leaf:
    __slots__ = ("symbol",)

    def __init__(self, symbol):
        self.symbol = symbol


def textbook_tree(symbols):
    """Huffman tree of a list of symbols: a Leaf, or a [left, right] list of subtrees."""
    heap = [(count, i, Leaf(symbol)) for i, (symbol, count) in enumerate(Counter(symbols).items())]
    heapq.heapify(heap)
    tiebreak = len(heap)
    while len(heap) > 1:
        count_a, _, a = heapq.heappop(heap)
        count_b, _, b = heapq.heappop(heap)
        heapq.heappush(heap, (count_a + count_b, tiebreak, [a, b]))
        tiebreak += 1
    return heap[0][2]


def textbook_codes(tree, prefix="", codes=None):
    """{symbol: code string} by walking the tree; a lone symbol gets the code '0'."""
    codes = {} if codes is None else codes
    if isinstance(tree, Leaf):
        codes[tree.symbol] = prefix or "0"
    else:
        textbook_codes(tree[0], prefix + "0", codes)
        textbook_codes(tree[1], prefix + "1", codes)
    return codes


def textbook_encode(symbols):
    """Return (tree, packed bytes, number of bits)."""
    tree = textbook_tree(symbols)
    codes = textbook_codes(tree)
    bits = "".join(codes[s] for s in symbols)
    padded = bits + "0" * (-len(bits) % 8)
    payload = int(padded, 2).to_bytes(len(padded) // 8, "big") if padded else b""
    return tree, payload, len(bits)


def textbook_decode(tree, payload, n_bits, n_symbols):
    """Walk the tree bit by bit."""
    bits = bin(int.from_bytes(payload, "big"))[2:].zfill(8 * len(payload))[:n_bits] if payload else ""
    if isinstance(tree, Leaf):
        return [tree.symbol] * n_symbols
    out, node = [], tree
    for bit in bits:
        node = node[bit == "1"]
        if isinstance(node, Leaf):
            out.append(node.symbol)
            node = tree
    return out


# ---------------------------------------------------------------------------

def build_model(bits: int, seed: int):
    torch.manual_seed(seed)
    model = AlexNet()
    with contextlib.redirect_stdout(io.StringIO()):
        model.prune_by_percentile(DEFAULT_LAYER_KEEP)
    apply_weight_sharing(model, bits=bits)
    return model


def recorded_streams(model):
    """The arrays our encoder Huffman codes for ``model``, in order."""
    streams, original = [], hc.huffman_encode

    def record(array, path):
        streams.append(np.ascontiguousarray(array).reshape(-1))
        return original(array, path)

    hc.huffman_encode = record
    try:
        with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stdout(io.StringIO()):
            hc.huffman_encode_model(model, directory)
    finally:
        hc.huffman_encode = original
    return streams


def time_ours(model):
    """Whole model: huffman_encode_model, then huffman_decode_model into a fresh AlexNet."""
    fresh = AlexNet()
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            report = hc.huffman_encode_model(model, directory)
        middle = time.perf_counter()
        decoded = hc.huffman_decode_model(fresh, directory)
        end = time.perf_counter()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), decoded.parameters()))
    return middle - start, end - middle, report


def time_ours_streams(streams):
    """Only the Huffman part: huffman_encode / huffman_decode of the same streams (files included)."""
    with tempfile.TemporaryDirectory() as directory:
        paths = [Path(directory) / f"{i}.huff" for i in range(len(streams))]
        start = time.perf_counter()
        for stream, path in zip(streams, paths):
            hc.huffman_encode(stream, path)
        middle = time.perf_counter()
        decoded = [hc.huffman_decode(path) for path in paths]
        end = time.perf_counter()
    assert all(np.array_equal(a, b) for a, b in zip(streams, decoded))
    return middle - start, end - middle


def time_textbook(streams):
    lists = [s.tolist() for s in streams]   # Python numbers, as a textbook version would hold them
    start = time.perf_counter()
    encoded = [textbook_encode(symbols) for symbols in lists]
    middle = time.perf_counter()
    decoded = [textbook_decode(tree, payload, n_bits, len(symbols))
               for (tree, payload, n_bits), symbols in zip(encoded, lists)]
    end = time.perf_counter()
    assert decoded == lists, "the textbook decoder is wrong"
    return middle - start, end - middle, sum(n_bits for _, _, n_bits in encoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs of ours")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads")
    model = build_model(args.bits, args.seed)
    streams = recorded_streams(model)
    symbols = sum(s.size for s in streams)
    print(f"AlexNet, course per-layer pruning, {args.bits}-bit sharing: {len(streams)} Huffman streams, "
          f"{symbols:,} symbols")

    runs = [time_ours(model) for _ in range(args.repeat)]
    encode, decode, report = min(runs, key=lambda r: r[0] + r[1])
    print(f"compressed: {report.compressed_bytes:,} bytes ({report.rate:.2f}x)")
    stream_runs = [time_ours_streams(streams) for _ in range(args.repeat)]
    stream_encode, stream_decode = min(stream_runs, key=sum)
    text_encode, text_decode, text_bits = time_textbook(streams)

    line = "{:<22}: encode {:7.3f} s  decode {:7.3f} s  total {:7.3f} s  ({})"
    print(line.format("ours, whole model", encode, decode, encode + decode,
                      f"huffman_encode_model + huffman_decode_model, best of {args.repeat}"))
    print(line.format("ours, streams only", stream_encode, stream_decode, stream_encode + stream_decode,
                      f"huffman_encode + huffman_decode, files included, best of {args.repeat}"))
    print(line.format("textbook, streams only", text_encode, text_decode, text_encode + text_decode,
                      f"per-symbol Python in memory, {text_bits:,} payload bits"))
    textbook, ours = text_encode + text_decode, stream_encode + stream_decode
    print(f"ratio (same streams): textbook / ours = {textbook / ours:.2f} "
          f"(encode {text_encode / stream_encode:.2f}, decode {text_decode / stream_decode:.2f}); "
          f"textbook / ours whole model = {textbook / (encode + decode):.2f}")


if __name__ == "__main__":
    main()
