"""Sanity check of the conv part of net/huffmancoding.py. The grader runs more, hidden tests."""
import numpy as np

from net.huffmancoding import huffman_decode_conv, huffman_encode_conv


def test_conv_weight_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.choice(np.float32([-0.5, 0.25, 1.0]), size=(4, 3, 3, 2))
    weight[rng.random(weight.shape) < 0.7] = 0.0
    size = huffman_encode_conv(weight, "conv", tmp_path)
    assert size > 0, "huffman_encode_conv returns the number of bytes it wrote"
    decoded = huffman_decode_conv(np.zeros_like(weight), "conv", tmp_path)
    assert decoded.shape == weight.shape and np.array_equal(decoded, weight), \
        "decoding what was encoded gives back the same weight"
