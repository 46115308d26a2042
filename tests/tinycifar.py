"""Write a tiny CIFAR-10 in the official python layout, for tests that must not need the real one.

The images are random but learnable: each class has its own mean colour, so
a few training steps already beat chance.
"""
import pickle
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(rng: np.random.Generator, n: int, label: str) -> dict:
    labels = rng.integers(0, 10, n)
    colours = np.linspace(20, 235, 10)[labels]
    images = np.clip(rng.normal(colours[:, None], 40, (n, 3072)), 0, 255).astype(np.uint8)
    return {"batch_label": label, "labels": labels.tolist(), "data": images,
            "filenames": [f"tiny_{i}.png" for i in range(n)]}


def write_tiny_cifar(root, n_train: int = 100, n_test: int = 50, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with ``n_train`` training images (over 5 files) and ``n_test`` test images."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-n_train // 5)
    for i in range(5):
        size = max(0, min(per_file, n_train - i * per_file))
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(_batch(rng, size, f"training batch {i + 1} of 5"), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_batch(rng, n_test, "testing batch 1 of 1"), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_file, "num_vis": 3072}, f)
    return Path(root)
