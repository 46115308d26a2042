"""Canonical Huffman coding of a 1-D array into one ``.huff`` file (PROVIDED: nothing to do here).

``net/huffmancoding.py`` calls two functions of this module:
``huffman_encode(array, path)`` and ``huffman_decode(path)``. You may read
it to learn how Huffman coding works; you do not need to change it (the
grader uses its own copy of this file).

Huffman coding in three steps
-----------------------------
1. **Count.** Find every distinct value ("symbol") of the array and how
   often it occurs.
2. **Code lengths.** Huffman's algorithm builds a binary tree: start with
   one node per symbol, weighted by its count, and repeatedly merge the two
   lightest nodes into a new node whose weight is their sum. A symbol's code
   length is its depth in the final tree, so frequent symbols get short
   codes. The codes form a prefix code (no code is the start of another) of
   the smallest possible total length.
3. **Codes.** Many codes have the same lengths; the *canonical* code is the
   one that can be rebuilt from the lengths alone, so a file needs to store
   only one length per symbol, not the tree. List the symbols by (length,
   symbol); the first gets the code 0...0 and each next one the previous code
   plus one, shifted left when the length grows. With lengths a=2, b=1, c=3,
   d=3 that gives b=``0``, a=``10``, c=``110``, d=``111``.

Decoding needs no tree either. Let W be the longest length and read the
stream W bits at a time (a "window"). Left-aligned to W bits, the canonical
codes of each length fill one consecutive range of window values, longer
codes above shorter ones, so the length of the code at the front of a window
is the first length whose range ends above it, and its symbol is found by
its distance from the first code of that length.

The ``.huff`` file
------------------
All numbers little-endian:

* a 9-byte header: dtype code (``b"f"`` float32 or ``b"i"`` int32), number
  of symbols N (uint32), number of distinct values K (uint32);
* the K distinct values, 4 bytes each, in increasing order of their bit
  pattern (so ``-0.0`` and ``0.0`` stay distinct and come back exactly);
* the K code lengths, 1 byte each, in the same order;
* the bit stream: the codes of the N symbols one after another, most
  significant bit first, padded with 0 bits to a whole byte.

The size of the file (what ``huffman_encode`` returns) counts all of it.

Memory
------
Both directions work through the array in chunks and keep per-symbol tables
in small integer types, so that even a dense, unshared layer (fc2: 2**24
values, almost all distinct) is coded in a few hundred MB.
"""
import os
import struct
from pathlib import Path
from typing import BinaryIO, Tuple, Union

import numpy as np

PathLike = Union[str, Path]

HEADER = struct.Struct("<cII")  # dtype code, number of symbols, number of distinct values
DTYPES = {b"f": np.dtype("<f4"), b"i": np.dtype("<i4")}
MAX_CODE_LENGTH = 57  # a code must fit in a 64-bit word read at any bit offset
ENCODE_CHUNK = 1 << 15  # symbols turned into bits at a time
DECODE_CHUNK = 1 << 20  # bit positions examined at a time


# ---------------------------------------------------------------------------
# Step 2: code lengths
# ---------------------------------------------------------------------------

def huffman_code_lengths(counts: np.ndarray) -> np.ndarray:
    """Return the Huffman code length of each symbol (int64), given how often each occurs."""
    return code_lengths(counts).astype(np.int64)


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """``huffman_code_lengths`` as uint8, one byte per symbol (what the file stores).

    The result is exactly that of the textbook heap algorithm (repeatedly
    merge the two lightest nodes; ties go to the node created first, leaves
    before merged nodes, lower symbol first). It runs as the classic "two
    queues" method: the leaves sorted by count in one queue, the merged
    nodes, which are created in order of weight, in the other. Whenever
    many nodes are lighter than the sum of the two lightest, none of the
    nodes made from them can be picked before they are all used, so they
    are paired all at once: a few dozen numpy steps instead of one Python
    step per symbol. A lone symbol gets a 1-bit code.
    """
    counts = np.asarray(counts)
    n = counts.size
    if n <= 1:
        return np.ones(n, dtype=np.uint8)
    kind = np.int64 if int(counts.sum(dtype=np.int64)) >= 2 ** 31 else np.int32
    # The leaves sorted by (count, symbol): one run per distinct count, symbols in order within it.
    run_counts, run_sizes = np.unique(counts, return_counts=True)
    leaf = np.repeat(run_counts.astype(kind), run_sizes)
    node = np.empty(n - 1, dtype=kind)  # weights of the merged nodes, in the order they are made
    batches = []
    used_leaves = used_nodes = made = 0
    while made < n - 1:
        front = np.sort(np.concatenate([leaf[used_leaves:used_leaves + 2], node[used_nodes:min(used_nodes + 2, made)]]))
        limit = front[0] + front[1]
        n_leaves = int(np.searchsorted(leaf, limit, side="right")) - used_leaves
        n_nodes = int(np.searchsorted(node[:made], limit, side="right")) - used_nodes
        if (n_leaves + n_nodes) % 2:  # leave the heaviest one (a merged node on a tie) for later
            if n_nodes and (n_leaves == 0 or node[used_nodes + n_nodes - 1] >= leaf[used_leaves + n_leaves - 1]):
                n_nodes -= 1
            else:
                n_leaves -= 1
        pairs = (n_leaves + n_nodes) // 2
        batch = (used_leaves, n_leaves, used_nodes, n_nodes, made)
        weights = _merge(leaf[used_leaves:used_leaves + n_leaves], node[used_nodes:used_nodes + n_nodes])
        node[made:made + pairs] = weights[0::2] + weights[1::2]
        batches.append(batch)
        used_leaves, used_nodes, made = used_leaves + n_leaves, used_nodes + n_nodes, made + pairs

    # Depths, from the root down: the nodes paired in a batch are children of the nodes it made,
    # the one at merged position j a child of node made + j // 2.
    leaf_depth = np.zeros(n, dtype=np.uint8)
    node_depth = np.zeros(n - 1, dtype=np.uint8)
    for used_leaves, n_leaves, used_nodes, n_nodes, made in reversed(batches):
        leaves, nodes = leaf[used_leaves:used_leaves + n_leaves], node[used_nodes:used_nodes + n_nodes]
        parents = node_depth[made:made + (n_leaves + n_nodes) // 2]
        for part, other, side, depth in ((leaves, nodes, "left", leaf_depth[used_leaves:]),
                                         (nodes, leaves, "right", node_depth[used_nodes:])):
            for start, position in _merged_positions(part, other, side):
                depth[start:start + position.size] = parents[position // 2] + 1
    lengths = np.empty(n, dtype=np.uint8)
    run_starts = np.concatenate([[0], np.cumsum(run_sizes)])
    for run, count in enumerate(run_counts):
        lengths[counts == count] = leaf_depth[run_starts[run]:run_starts[run + 1]]
    return lengths


def _merged_positions(part: np.ndarray, other: np.ndarray, side: str, chunk: int = 1 << 20):
    """Yield ``(start, positions)``: where ``part[start:start + chunk]`` lands when merged with ``other``.

    Both are sorted. ``side="left"`` puts ``part`` before equal entries of ``other`` (leaves before merged
    nodes on a tie), ``"right"`` after them. Chunked, so that no index array of the full size is needed.
    """
    for start in range(0, part.size, chunk):
        piece = part[start:start + chunk]
        yield start, np.arange(start, start + piece.size) + np.searchsorted(other, piece, side=side)


def _merge(leaves: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """``leaves`` and ``nodes`` (both sorted) merged in the heap's order: by weight, leaves first on a tie."""
    if nodes.size == 0 or leaves.size == 0:
        return leaves if nodes.size == 0 else nodes
    merged = np.empty(leaves.size + nodes.size, dtype=leaves.dtype)
    for part, other, side in ((leaves, nodes, "left"), (nodes, leaves, "right")):
        for start, position in _merged_positions(part, other, side):
            merged[position] = part[start:start + position.size]
    return merged


# ---------------------------------------------------------------------------
# Step 3: canonical codes
# ---------------------------------------------------------------------------

def first_codes(lengths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per code length L: how many symbols have it, and the canonical code of the first of them.

    ``first[L] = (first[L - 1] + count[L - 1]) << 1``, as in DEFLATE (RFC 1951).
    Both arrays are indexed by length, 0 to the longest length.
    """
    count = np.bincount(lengths, minlength=int(lengths.max()) + 1).astype(np.uint64)
    count[0] = 0
    first = np.zeros(count.size, dtype=np.uint64)
    for length in range(1, count.size):
        first[length] = (first[length - 1] + count[length - 1]) << np.uint64(1)
    return count, first


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol, given its code length (symbols of one length numbered in order)."""
    count, first = first_codes(lengths)
    codes = np.empty(lengths.size, dtype=np.uint32 if first.size <= 33 else np.uint64)
    for length in range(1, first.size):
        if count[length]:
            codes[lengths == length] = np.arange(first[length], first[length] + count[length], dtype=codes.dtype)
    return codes


# ---------------------------------------------------------------------------
# The file: encode
# ---------------------------------------------------------------------------

def distinct_values(bits: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The distinct entries of the uint32 array ``bits`` in increasing order, and how often each occurs (int32)."""
    ordered = np.sort(bits)
    if ordered.size == 0:
        return ordered, np.zeros(0, dtype=np.int32)
    new = np.empty(ordered.size, dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    values = ordered[new]
    starts = np.empty(values.size + 1, dtype=np.int64 if ordered.size >= 2 ** 31 else np.int32)
    found = 0
    for start in range(0, ordered.size, ENCODE_CHUNK * 16):  # np.flatnonzero of it all would take 8 bytes a value
        here = np.flatnonzero(new[start:start + ENCODE_CHUNK * 16]) + start
        starts[found:found + here.size] = here
        found += here.size
    starts[-1] = ordered.size
    del ordered, new
    return values, np.diff(starts)


def huffman_encode(array: np.ndarray, path: PathLike) -> int:
    """Huffman code the 1-D float32 or int32 ``array`` into the file ``path``; return the bytes written."""
    array = np.ascontiguousarray(array).reshape(-1)
    dtype_code = b"f" if array.dtype.kind == "f" else b"i"
    # The symbols are bit patterns rather than numbers, so that -0.0 and 0.0
    # (which compare equal) both come back exactly as they were.
    bits = array.astype(DTYPES[dtype_code], copy=False).view("<u4")
    values, counts = distinct_values(bits)
    lengths = code_lengths(counts)
    del counts
    if values.size and int(lengths.max()) > MAX_CODE_LENGTH:
        raise ValueError(f"{path}: a Huffman code is longer than {MAX_CODE_LENGTH} bits")
    codes = canonical_codes(lengths) if values.size else np.zeros(0, dtype=np.uint64)
    with open(path, "wb") as f:
        f.write(HEADER.pack(dtype_code, bits.size, values.size))
        f.write(values.tobytes())
        f.write(lengths.tobytes())
        _write_bit_stream(f, bits, values, codes, lengths)
        return f.tell()


def _write_bit_stream(f: BinaryIO, bits: np.ndarray, values: np.ndarray, codes: np.ndarray,
                      lengths: np.ndarray) -> None:
    """Write the codes of ``bits`` (most significant bit first), chunk by chunk, padded to a whole byte."""
    carry = np.zeros(0, dtype=np.uint8)  # bits of the last chunk that did not fill a byte
    for start in range(0, bits.size, ENCODE_CHUNK):
        symbol = np.searchsorted(values, bits[start:start + ENCODE_CHUNK])
        code, size = codes[symbol].astype(np.uint64), lengths[symbol].astype(np.int64)
        owner = np.repeat(np.arange(symbol.size), size)  # which code each output bit belongs to
        place = np.arange(owner.size) - np.repeat(np.cumsum(size) - size, size)
        shift = (size[owner] - 1 - place).astype(np.uint64)
        stream = np.concatenate([carry, ((code[owner] >> shift) & np.uint64(1)).astype(np.uint8)])
        whole = stream.size - stream.size % 8
        f.write(np.packbits(stream[:whole]).tobytes())
        carry = stream[whole:]
    if carry.size:
        f.write(np.packbits(carry).tobytes())


# ---------------------------------------------------------------------------
# The file: decode
# ---------------------------------------------------------------------------

def huffman_decode(path: PathLike) -> np.ndarray:
    """Read back the array that ``huffman_encode`` wrote to ``path``."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        blob = bytearray(size + 8)  # 8 zero bytes after the stream, so that a 64-bit word can be read at every byte
        f.readinto(memoryview(blob)[:size])
    if size < HEADER.size:
        raise ValueError(f"{path}: not a .huff file (only {size} bytes)")
    dtype_code, n_symbols, n_values = HEADER.unpack_from(blob)
    if dtype_code not in DTYPES or size < HEADER.size + 5 * n_values:
        raise ValueError(f"{path}: not a .huff file (bad header)")
    dtype = DTYPES[dtype_code]
    values = np.frombuffer(blob, dtype=dtype, count=n_values, offset=HEADER.size)
    lengths = np.frombuffer(blob, dtype=np.uint8, count=n_values, offset=HEADER.size + 4 * n_values)
    start = HEADER.size + 5 * n_values
    payload_bytes = size - start
    if n_symbols == 0:
        return np.zeros(0, dtype=dtype)
    if n_values == 0 or lengths.min() == 0 or lengths.max() > MAX_CODE_LENGTH:
        raise ValueError(f"{path}: not a .huff file (bad code lengths)")

    # Canonical order: by length, then by position in the file.
    in_order = np.concatenate([values[lengths == length] for length in range(1, int(lengths.max()) + 1)])
    count, first = first_codes(lengths)
    width = count.size - 1
    offset = np.concatenate([[0], np.cumsum(count[:-1])]).astype(np.int64)  # canonical index of first[L]
    ends = ((first + count) << (np.uint64(width) - np.arange(count.size, dtype=np.uint64)))[1:]
    words = np.ndarray(payload_bytes + 1, dtype=">u8", buffer=blob, offset=start, strides=(1,))  # one at every byte
    n_bits = 8 * payload_bytes

    decoded = np.empty(n_symbols, dtype=dtype)
    done, position = 0, 0
    while done < n_symbols:
        if position >= n_bits:
            raise ValueError(f"{path}: the bit stream ends after {done} of {n_symbols} symbols")
        bit = np.arange(position, min(position + DECODE_CHUNK, n_bits))
        window = (words[bit >> 3].astype(np.uint64) << (bit & 7).astype(np.uint64)) >> np.uint64(64 - width)
        length = np.minimum(np.searchsorted(ends, window, side="right") + 1, width)
        starts = code_starts(np.arange(bit.size) + length, n_symbols - done)
        length, window = length[starts], window[starts]
        index = offset[length] + (window >> (np.uint64(width) - length.astype(np.uint64))).astype(np.int64) \
            - first[length].astype(np.int64)
        decoded[done:done + starts.size] = in_order[np.clip(index, 0, in_order.size - 1)]
        done += starts.size
        position += int(starts[-1] + length[-1])
    return decoded


def code_starts(next_start: np.ndarray, limit: int, hop_bits: int = 4) -> np.ndarray:
    """Where the codes of one chunk start, given ``next_start[p]``: where the next code starts if one starts at ``p``.

    The first code starts at 0; positions from ``len(next_start)`` on belong
    to the next chunk. At most ``limit`` starts are returned. Following the
    chain is inherently sequential; to keep the Python loop short it jumps
    ``2**hop_bits`` codes at a time (a table built by repeated squaring) and
    fills in the codes in between with numpy.
    """
    end = next_start.size
    chain = np.append(np.minimum(next_start, end), end)  # the end leads to itself
    far = chain
    for _ in range(hop_bits):
        far = far[far]
    coarse = []
    position = 0
    hop = 2 ** hop_bits
    while position < end and len(coarse) * hop < limit:
        coarse.append(position)
        position = int(far[position])
    starts = np.empty((len(coarse), hop), dtype=np.int64)
    starts[:, 0] = coarse
    for step in range(1, hop):
        starts[:, step] = chain[starts[:, step - 1]]
    starts = starts.reshape(-1)
    return starts[starts < end][:limit]
