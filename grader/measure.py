"""Measure one submission: safe load, reference Huffman encode/decode, accuracy.

``measure(path, student_id, evaluator)`` never raises for a bad submission:
it returns a ``Measurement`` whose ``problem`` says what was wrong. The
accuracy comes from an *evaluator* (anything with ``prepare()``, ``key`` and
``__call__(model, student_id) -> (correct, total)``), so tests inject
accuracies without training; ``CifarEvaluator`` is the real one.
"""
import contextlib
import copy
import functools
import hashlib
import io
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional, Protocol, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from grader.homework import MAX_DISTINCT_VALUES, TEST_IMAGES
from grader.ranking import Entry, original_bytes
from grader.reference import reference, source_digest
from grader.safeload import SubmissionError, load_state_dict

EVAL_BATCH = 2000
SPARSE_BELOW = 0.25
"""An fc layer with fewer non-zero weights than this fraction is evaluated as a sparse (CSR) matrix product."""
NEAR_TIE = 1e-4
"""An image whose two best float32 logits are closer than this (relative to the largest) is decided again in
float64, so that rounding differences between CPUs, thread counts or batch sizes cannot flip a prediction."""

PathLike = Union[str, Path]


@dataclass
class Measurement:
    """What the leaderboard knows about one submitted file (``problem`` is empty when it could be measured)."""

    student_id: str
    problem: str = ""
    correct: int = 0
    total: int = 0
    compressed_bytes: int = 0
    table: str = ""
    """The reference encoder's per-tensor size table."""
    seconds: float = 0.0

    def entry(self) -> Entry:
        """The part the ranking needs."""
        return Entry(self.student_id, self.correct, self.total, self.compressed_bytes, self.problem)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class Evaluator(Protocol):
    """Measures a decoded model's accuracy; ``key`` names data and method in the result cache."""

    key: str

    def prepare(self) -> None: ...

    def __call__(self, model: nn.Module, student_id: str) -> Tuple[int, int]: ...


class CifarEvaluator:
    """Top-1 accuracy on the CIFAR-10 test set, normalised as the handout does, on the CPU.

    Deterministic: eval mode, fixed batch size, deterministic algorithms, and
    near-ties re-decided in float64 (see ``NEAR_TIE``).
    """

    def __init__(self, data_dir: PathLike, limit: Optional[int] = None) -> None:
        self.data_dir = str(data_dir)
        self.limit = limit
        test_file = Path(data_dir) / reference().util.CIFAR10_FOLDER / "test_batch"
        fingerprint = hashlib.sha256(test_file.read_bytes()).hexdigest()[:16] if test_file.is_file() else "none"
        self.key = f"cifar10-test:{fingerprint}:{limit}:batch{EVAL_BATCH}:tie{NEAR_TIE}"
        self._images: Optional[torch.Tensor] = None
        self._labels: Optional[torch.Tensor] = None

    def prepare(self) -> None:
        """Load and normalise the test set once (about 120 MB as float32)."""
        if self._images is None:
            util = reference().util
            data = util.load_cifar10(self.data_dir, train=False, download=False).subset(self.limit)
            self._images, self._labels = util.normalize(data.images), data.labels

    def __getstate__(self) -> dict:  # workers load the data themselves
        return {**self.__dict__, "_images": None, "_labels": None}

    @torch.no_grad()
    def __call__(self, model: nn.Module, student_id: str) -> Tuple[int, int]:
        self.prepare()
        model.eval()
        fast, exact = with_sparse_linears(model), None
        predictions = []
        for start in range(0, len(self._labels), EVAL_BATCH):
            images = self._images[start:start + EVAL_BATCH]
            logits = fast(images)
            top2 = logits.topk(2, dim=1).values
            near = (top2[:, 0] - top2[:, 1]) <= NEAR_TIE * top2[:, 0].abs().clamp(min=1.0)
            predicted = logits.argmax(1)
            if near.any():
                if exact is None:
                    exact = copy.deepcopy(model).double()
                predicted[near] = exact(images[near].double()).argmax(1)
            predictions.append(predicted)
        correct = int((torch.cat(predictions) == self._labels).sum())
        return correct, len(self._labels)


class FixedAccuracy:
    """An evaluator that looks the number of correct images up by student id (tests and dry runs: no data needed)."""

    def __init__(self, correct: Mapping[str, int], total: int = TEST_IMAGES) -> None:
        self.correct, self.total = dict(correct), total
        self.key = "fixed:" + ",".join(f"{k}={v}" for k, v in sorted(self.correct.items())) + f"/{total}"

    def prepare(self) -> None:
        pass

    def __call__(self, model: nn.Module, student_id: str) -> Tuple[int, int]:
        return self.correct.get(student_id, 0), self.total


class SparseLinear(nn.Module):
    """An ``nn.Linear`` with mostly zero weights, computed as a CSR matrix product (same result up to rounding)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach().unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, self.weight, x.t()).t()


def with_sparse_linears(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for evaluation in which every sparse enough ``nn.Linear`` is a ``SparseLinear``."""
    fast = copy.deepcopy(model)
    for name, module in list(fast.named_children()):
        if isinstance(module, nn.Linear) and float((module.weight != 0).float().mean()) < SPARSE_BELOW:
            setattr(fast, name, SparseLinear(module))
    return fast


def canonical_zeros(tensor: torch.Tensor) -> torch.Tensor:
    """Turn -0.0 into 0.0, in place: a pruned weight is a zero whatever its sign (``w * mask`` leaves -0.0).

    Adding 0.0 does exactly that and changes no other finite value.
    """
    return tensor.add_(0.0)


@functools.lru_cache(maxsize=1)
def _template() -> nn.Module:
    return reference().AlexNet()


def blank_alexnet() -> nn.Module:
    """A fresh reference AlexNet whose parameters are about to be overwritten (a copy: random init is slower)."""
    return copy.deepcopy(_template())


def _check_distinct_values(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        if name.endswith("weight") and int(torch.count_nonzero(param)) > MAX_DISTINCT_VALUES:
            distinct = int(np.unique(param.detach().numpy()).size)  # numpy sorts far faster than torch here
            if distinct > MAX_DISTINCT_VALUES:
                raise SubmissionError(f"{name} has {distinct:,} distinct values: the model is not weight-shared "
                                      f"(submit model_after_weight_sharing.ptmodel)")


def bit_identical(a: nn.Module, b: nn.Module) -> bool:
    """Whether every parameter of ``a`` and ``b`` has exactly the same bits."""
    pairs = zip(a.state_dict().values(), b.state_dict().values())
    return all(torch.equal(x.view(torch.int32), y.view(torch.int32)) for x, y in pairs)


def encode_decode(model: nn.Module) -> Tuple[nn.Module, "reference().huffman.CompressionReport"]:
    """Encode ``model`` with the reference Huffman coder into a temporary folder and decode it into a fresh AlexNet."""
    ref = reference()
    with tempfile.TemporaryDirectory(prefix="leaderboard-") as folder, \
            contextlib.redirect_stdout(io.StringIO()):
        report = ref.huffman.huffman_encode_model(model, folder)
        decoded = ref.huffman.huffman_decode_model(blank_alexnet(), folder)
    return decoded, report


def measure(path: PathLike, student_id: str, evaluator: Evaluator) -> Measurement:
    """Load, encode, decode and evaluate the submission at ``path``; problems go into ``.problem``."""
    started = time.perf_counter()
    result = Measurement(student_id)
    try:
        model = blank_alexnet()
        expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
        tensors = {name: canonical_zeros(t) for name, t in load_state_dict(path, expected).items()}
        model.load_state_dict(tensors, strict=True, assign=True)
        _check_distinct_values(model)
        decoded, report = encode_decode(model)
        if report.original_bytes != original_bytes():
            raise RuntimeError(f"the reference encoder counted {report.original_bytes} original bytes")
        if not bit_identical(model, decoded):
            raise RuntimeError("the reference encoder did not decode the model bit for bit")
        result.compressed_bytes, result.table = report.compressed_bytes, report.table()
        result.correct, result.total = evaluator(decoded, student_id)
    except SubmissionError as error:
        result.problem = f"invalid: {error}"
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def measure_key(evaluator: Evaluator) -> str:
    """Everything a cached measurement depends on besides the file: the code that measures, and the evaluation.

    The code is hashed (the reference files the leaderboard runs, this module and the loader), so any change to
    it measures everything again.
    """
    code = hashlib.sha256(source_digest().encode())
    for module in (Path(__file__), Path(__file__).with_name("safeload.py")):
        code.update(module.read_bytes())
    return f"code-{code.hexdigest()[:16]}:{evaluator.key}"
