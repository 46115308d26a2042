"""Weight sharing: replace the non-zero weights of each layer by a few shared values.

The non-zero weights of a layer are clustered with k-means into ``2**bits``
clusters and each weight is replaced by the centre (centroid) of its cluster.
After that, a layer holds at most ``2**bits`` distinct non-zero values, so
each weight can be stored as a short cluster index (or, after Huffman coding,
an even shorter code). Zeros (pruned weights) stay zero and no weight moves.

The centroids start evenly spaced between the smallest and the largest weight
("linear initialisation", which Han et al. found best because it keeps the
rare large weights), and k-means runs once from there, so the result is
deterministic.
"""
from typing import Mapping, Union

import numpy as np
import torch.nn as nn
from scipy.sparse import csr_matrix
from sklearn.cluster import KMeans

Bits = Union[int, Mapping[str, int]]


FIT_SAMPLE = 200_000
"""Layers with more non-zero weights than this (an unpruned fc layer has millions) fit their centroids on this
many of them, drawn with the fixed seed ``SAMPLE_SEED``, and then give every weight its nearest centroid: the
centroids barely move, and k-means takes seconds instead of minutes."""
SAMPLE_SEED = 0


def share_values(values: np.ndarray, bits: int) -> np.ndarray:
    """Return ``values`` (1-D) with each entry replaced by its k-means centroid.

    Uses ``2**bits`` clusters, or fewer when ``values`` has fewer distinct
    entries, with linearly spaced initial centroids.
    """
    if values.size == 0:
        return values.copy()
    n_clusters = min(2 ** bits, np.unique(values).size)
    column = values.reshape(-1, 1).astype(np.float64)
    init = np.linspace(column.min(), column.max(), n_clusters).reshape(-1, 1)
    kmeans = KMeans(n_clusters=n_clusters, init=init, n_init=1, algorithm="lloyd")
    if values.size <= FIT_SAMPLE:
        labels = kmeans.fit(column).labels_
    else:
        sample = np.random.default_rng(SAMPLE_SEED).choice(values.size, FIT_SAMPLE, replace=False)
        labels = kmeans.fit(column[sample]).predict(column)
    centroids = kmeans.cluster_centers_.astype(values.dtype).reshape(-1)
    return centroids[labels]


def apply_weight_sharing(model: nn.Module, bits: Bits = 5) -> None:
    """Share the non-zero weights of every conv and fc layer of ``model``, in place.

    ``bits`` is one bit width for all layers or a mapping from layer name to
    bit width (layers missing from the mapping are left unshared).
    """
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        layer_bits = bits.get(name) if isinstance(bits, Mapping) else bits
        if layer_bits is None:
            continue
        weight = module.weight.data.cpu().numpy()
        shape = weight.shape
        if len(shape) == 2:  # fully connected
            mat = csr_matrix(weight)
            mat.data = share_values(mat.data, layer_bits)
            shared = mat.toarray()
        elif len(shape) == 4:  # convolution
            # TODO: `weight` is the (Kn, Ch, H, W) numpy array of this conv layer.
            #       1. pick out its non-zero weights (a boolean mask of
            #          `weight != 0` does it; do not cluster the zeros);
            #       2. replace them with `share_values(nonzero_weights, layer_bits)`;
            #       3. put the shared values back at exactly the positions they
            #          came from, in a new array called `shared` of the same
            #          shape, zeros staying zero.
            # BEGIN SOLUTION
            shared = weight.copy()
            nonzero = shared != 0
            shared[nonzero] = share_values(shared[nonzero], layer_bits)
            # END SOLUTION
            # STUB: shared = weight
        else:
            continue
        module.weight.data.copy_(module.weight.data.new_tensor(shared))
