"""Shared helpers of the three scripts: data, training loop pieces, evaluation, logging.

CIFAR-10 is read from its official python layout (``cifar-10-batches-py/``)
once, kept in memory as uint8 tensors, and augmented batch by batch on the
device as tensors (random crop with 4 pixels of padding, horizontal flip).
"""
import argparse
import hashlib
import pickle
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple, TypeVar, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

# Per-channel statistics of the CIFAR-10 training set. The leaderboard
# evaluates every submitted model with exactly these.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = {  # the official release
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]


class DataError(Exception):
    """CIFAR-10 is missing or unreadable; the message says what to do."""


@dataclass
class ImageSet:
    """Images as a uint8 tensor (N, 3, 32, 32) and their labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, size: Optional[int]) -> "ImageSet":
        """The first ``size`` images (all of them when ``size`` is None)."""
        return self if size is None else ImageSet(self.images[:size], self.labels[:size])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batch files and nothing else: only numpy arrays may be built."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 file")
        return super().find_class(module, name)


def _read_batch(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as error:
        raise DataError(f"{path} is not a readable CIFAR-10 batch ({error}); "
                        "delete the folder and prepare the data again") from None
    return images, labels


def _warn_if_not_official(folder: Path, names) -> None:
    changed = [n for n in names if hashlib.md5((folder / n).read_bytes()).hexdigest() != CIFAR10_MD5[n]]
    if changed:
        print(f"warning: {len(changed)} CIFAR-10 file(s) in {folder} differ from the official release "
              "(md5); using them anyway", file=sys.stderr)


def _download(data_dir: Path) -> None:
    try:
        from torchvision.datasets import CIFAR10
        CIFAR10(str(data_dir), train=True, download=True)
    except Exception as error:  # no network, proxy, disk full...: all mean the same to the user
        raise DataError(
            f"CIFAR-10 is not in {data_dir / CIFAR10_FOLDER} and could not be downloaded ({error}).\n"
            f"Put the official python version (the folder {CIFAR10_FOLDER}/) inside {data_dir}, "
            f"or point --data-dir at the folder that holds it.") from None


def load_cifar10(data_dir: str, train: bool, download: bool = True) -> ImageSet:
    """Load the CIFAR-10 training or test set from ``data_dir/cifar-10-batches-py``.

    Downloads it with torchvision when it is missing (and ``download`` is
    true). Raises ``DataError`` with instructions when that is impossible.
    """
    root = Path(data_dir)
    folder = root / CIFAR10_FOLDER
    names = TRAIN_FILES if train else TEST_FILES
    if not all((folder / n).is_file() for n in names):
        if not download:
            raise DataError(f"CIFAR-10 is not in {folder}")
        _download(root)
    _warn_if_not_official(folder, names)
    parts = [_read_batch(folder / n) for n in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, 32, 32) -> float tensors with the CIFAR-10 mean and std applied."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (4 pixels of zero padding) and random horizontal flip of a uint8 batch."""
    n = len(images)
    padded = F.pad(images, (4, 4, 4, 4))
    top = torch.randint(0, 9, (n, 1), generator=generator).to(images.device)
    left = torch.randint(0, 9, (n, 1), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    offsets = torch.arange(32, device=images.device)
    rows = (top + offsets).view(n, 1, 32, 1)
    columns = torch.where(flip.view(n, 1), 31 - offsets, offsets) + left
    samples = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channels = torch.arange(3, device=images.device).view(1, 3, 1, 1)
    return padded[samples, channels, rows, columns.view(n, 1, 1, 32)]


def batches(data: ImageSet, batch_size: int, device: torch.device, train: bool = False,
            generator: Optional[torch.Generator] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised ``(images, labels)`` batches on ``device``.

    With ``train=True`` the order is shuffled and the images augmented, both
    drawn from ``generator`` (a CPU ``torch.Generator``), so a seed fixes them.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if train else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        images = data.images[index].to(device)
        if train:
            images = augment(images, generator)
        yield normalize(images), data.labels[index].to(device)


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 500,
             progress: bool = True) -> Tuple[float, float]:
    """Return ``(average loss, accuracy in percent)`` of ``model`` on ``data``, in eval mode."""
    model.eval()
    total_loss, correct = 0.0, 0
    steps = batches(data, batch_size, device)
    for images, labels in tqdm(steps, total=-(-len(data) // batch_size), desc="test",
                               leave=False, disable=not progress):
        output = model(images)
        total_loss += F.cross_entropy(output, labels, reduction="sum").item()
        correct += (output.argmax(1) == labels).sum().item()
    return total_loss / len(data), 100.0 * correct / len(data)


def test(model: nn.Module, data: ImageSet, device: torch.device) -> float:
    """Evaluate, print the result like the original handout did, and return the accuracy."""
    loss, accuracy = evaluate(model, data, device)
    correct = round(accuracy * len(data) / 100)
    print(f"Test set: Average loss: {loss:.4f}, Accuracy: {correct}/{len(data)} ({accuracy:.2f}%)")
    return accuracy


def nonzero_report(model: nn.Module) -> str:
    """One line per parameter with its non-zero count, then the total and the "rate from zeros".

    The rate from zeros is all values / non-zero values: how much smaller
    the model would be if only its non-zero values were stored, at 4 bytes
    each and for free positions. It is *not* the file compression rate that
    ``huffman_encode.py`` prints and the leaderboard ranks (bytes of the
    dense float32 model / bytes of the files written): that one also pays
    for the positions of the non-zeros and gains from Huffman coding and
    weight sharing.
    """
    lines, nonzero, total = [], 0, 0
    for name, p in model.named_parameters():
        count = int(torch.count_nonzero(p.data))
        nonzero, total = nonzero + count, total + p.numel()
        lines.append(f"{name:20} | nonzeros = {count:9} / {p.numel():9} ({100 * count / p.numel():6.2f}%)"
                     f" | pruned = {p.numel() - count:9} | shape = {tuple(p.shape)}")
    lines.append(f"alive: {nonzero}, pruned: {total - nonzero}, total: {total}, "
                 f"rate from zeros (all / non-zero values, not the file compression rate): "
                 f"{total / max(nonzero, 1):.2f}x ({100 * (total - nonzero) / total:6.2f}% pruned)")
    return "\n".join(lines)


def print_nonzeros(model: nn.Module) -> None:
    print(nonzero_report(model))


def log(filename: str, content: str) -> None:
    """Append ``content`` and a newline to ``filename``."""
    with open(filename, "a") as f:
        f.write(content + "\n")


def log_accuracy(filename: str, step: str, accuracy: float, images: int) -> None:
    """Append ``<step> <accuracy> on <images> test images``: check_submission.py reads the last one."""
    log(filename, f"{step} {accuracy:.2f} on {images} test images")


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


Number = TypeVar("Number", int, float)


def per_layer(flag: str, text: str, number: Callable[[str], Number], example: str) -> Union[Number, Dict[str, Number]]:
    """Parse a flag that is one number for every layer (``"10"``) or ``layer=number`` pairs (``"conv1=50,fc2=1"``).

    Raises ValueError naming ``flag`` and showing ``example`` when ``text`` is of neither form.
    """
    try:
        if "=" not in text:
            return number(text)
        values = {}
        for item in text.split(","):
            name, sign, value = item.partition("=")
            if not sign or not name.strip():
                raise ValueError(item)
            values[name.strip()] = number(value)
        return values
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected {example}") from None


def common_arguments(description: str) -> argparse.ArgumentParser:
    """The flags every script shares."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="folder that holds (or will hold) cifar-10-batches-py/")
    parser.add_argument("--saves-dir", default="saves", help="folder of the .ptmodel files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--subset", type=int, default=None, metavar="N",
                        help="use only the first N training and N test images (a quick run)")
    parser.add_argument("--log", default="log.txt", help="file the results are appended to")
    return parser


def load_model(path: str) -> nn.Module:
    """Load a whole model written by ``torch.save(model)`` by one of our own scripts."""
    if not Path(path).is_file():
        raise DataError(f"{path} does not exist; run the previous script first")
    # Our own file from an earlier step, so a full unpickle is fine here.
    return torch.load(path, map_location="cpu", weights_only=False)


def run_main(main) -> None:
    """Run a script's ``main`` and turn expected failures into one-line messages."""
    try:
        main()
    except (DataError, ValueError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
