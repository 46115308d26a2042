"""Measure one ``.onnx`` submission: the checks, the bit-operations, accuracy and latency in ONNX Runtime.

``measure(path, student_id, bench)`` never raises for a bad submission: the
``OnnxMeasurement`` it returns says what was wrong in ``problem``. A
:class:`Bench` holds what every measurement needs: the evaluator (the test
set), the dense reference model for the latency ratio and the number of
latency rounds; it opens its ONNX Runtime sessions in the measuring process.

**Where it runs.** Like Part 1's leaderboard, in the worker processes of
``grader/workerpool.py`` (a timeout per model, a crash costs one model), not
in the bubblewrap box: nothing the student wrote is executed. A submission
is data, checked by ``grader/onnxload.py`` before a session is created, and
ONNX Runtime then runs only its own CPU kernels of the allow-listed standard
operators: no custom-op library is registered, no other domain (contrib
operators included) is accepted, no external data can make it open a file,
no control flow can loop, and every shape is static and bounded, so memory
and time are bounded by the graph itself (and the time by ``--timeout``).
"""
import hashlib
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np

from grader.homework import ONNX_CLASSES, ONNX_LATENCY_ROUNDS
from grader.ranking import OnnxEntry
from grader.safeload import SubmissionError

PathLike = Union[str, Path]
EVAL_BATCH = 250
"""Images per ONNX Runtime call when the model's batch is free (one at a time when it is fixed at 1)."""
LATENCY_REPEATS = 5
"""Inferences of one image per timing; a round times the reference and the submission once each."""
Runner = Callable[[np.ndarray], np.ndarray]


def session(data: bytes):
    """An ONNX Runtime session with the leaderboard's fixed settings: CPU, 1 thread, sequential, all graph
    optimisations, ONNX format only."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # workers share the cores
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def runner(data: bytes, input_name: str) -> Runner:
    """A function from a float32 batch to the model's logits; ``SubmissionError`` when ONNX Runtime refuses it."""
    try:
        running = session(data)
    except Exception as error:  # onnxruntime raises its own exception types
        raise SubmissionError(f"ONNX Runtime cannot load the model ({_first_line(error)})") from None

    def run(images: np.ndarray) -> np.ndarray:
        try:
            return running.run(None, {input_name: images})[0]
        except Exception as error:
            raise SubmissionError(f"ONNX Runtime failed running the model ({_first_line(error)})") from None
    return run


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


@dataclass
class OnnxMeasurement:
    """What the deployable-model leaderboard knows about one ``.onnx`` file."""

    student_id: str
    problem: str = ""
    correct: int = 0
    total: int = 0
    bit_ops: int = 0
    macs: int = 0
    latency_ratio: Optional[float] = None
    table: str = ""
    """The per-node cost table (``grader.bitops.table``)."""
    seconds: float = 0.0

    def entry(self, fits_uno: str = "n/a") -> OnnxEntry:
        """The part the ranking needs (``fits_uno`` comes from the student's C header, measured apart)."""
        return OnnxEntry(self.student_id, self.correct, self.total, self.bit_ops, self.macs, self.latency_ratio,
                         fits_uno, self.problem)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OnnxMeasurement":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


class OnnxCifarEvaluator:
    """Top-1 accuracy of an ONNX model on the CIFAR-10 test set, normalised as the handout does."""

    def __init__(self, data_dir: PathLike, limit: Optional[int] = None) -> None:
        from grader.reference import reference
        self.data_dir, self.limit = str(data_dir), limit
        test_file = Path(data_dir) / reference().util.CIFAR10_FOLDER / "test_batch"
        fingerprint = hashlib.sha256(test_file.read_bytes()).hexdigest()[:16] if test_file.is_file() else "none"
        self.key = f"cifar10-test:{fingerprint}:{limit}:onnx-batch{EVAL_BATCH}"
        self.images: Optional[np.ndarray] = None
        self.labels: Optional[np.ndarray] = None

    def prepare(self) -> None:
        """Load and normalise the test set once (float32, N x 3 x 32 x 32)."""
        if self.images is None:
            from grader.reference import reference
            util = reference().util
            data = util.load_cifar10(self.data_dir, train=False, download=False).subset(self.limit)
            self.images = np.ascontiguousarray(util.normalize(data.images).numpy(), dtype=np.float32)
            self.labels = data.labels.numpy()

    def __getstate__(self) -> dict:  # workers load the data themselves
        return {**self.__dict__, "images": None, "labels": None}

    def __call__(self, run: Runner, free_batch: bool) -> Tuple[int, int]:
        """(correct, total) of ``run`` on the test set, ``EVAL_BATCH`` images a call or one when not ``free_batch``."""
        self.prepare()
        step = EVAL_BATCH if free_batch else 1
        predicted = []
        for start in range(0, len(self.labels), step):
            batch = self.images[start:start + step]
            logits = np.asarray(run(batch))
            if logits.shape != (len(batch), ONNX_CLASSES):
                raise SubmissionError(f"the model returned logits of shape {list(logits.shape)} for "
                                      f"{len(batch)} images")
            predicted.append(logits.argmax(axis=1))
        return int((np.concatenate(predicted) == self.labels).sum()), len(self.labels)


def latency_ratio(student: Runner, reference: Runner, image: np.ndarray, rounds: int) -> float:
    """Median over ``rounds`` of (time of the submission / time of the reference) on one image, interleaved:
    each round times both, in alternating order, ``LATENCY_REPEATS`` inferences each."""
    for run in (reference, student):  # warm-up: first runs allocate
        run(image)
    ratios = []
    for index in range(rounds):
        order = (reference, student) if index % 2 == 0 else (student, reference)
        seconds = {}
        for run in order:
            started = time.perf_counter()
            for _ in range(LATENCY_REPEATS):
                run(image)
            seconds[run] = time.perf_counter() - started
        ratios.append(seconds[student] / seconds[reference])
    return round(statistics.median(ratios), 3)


class Bench:
    """The evaluator, the dense reference model and the latency rounds: everything ``measure`` needs."""

    def __init__(self, evaluator, reference_path: Optional[PathLike], rounds: int = ONNX_LATENCY_ROUNDS) -> None:
        if rounds and reference_path is None:
            raise ValueError("timing latency needs a reference model")
        self.evaluator, self.rounds = evaluator, rounds
        self.reference_path = Path(reference_path) if rounds else None
        digest = hashlib.sha256(self.reference_path.read_bytes()).hexdigest()[:16] if rounds else "none"
        self.key = f"{evaluator.key}:reference-{digest}:rounds{rounds}:repeats{LATENCY_REPEATS}"
        self._reference: Optional[Runner] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reference": None}

    def prepare(self) -> None:
        """Load the test set and open the reference session (once per process)."""
        self.evaluator.prepare()
        if self._reference is None and self.rounds:
            from grader import onnxload
            reference = onnxload.load(self.reference_path)
            self._reference = runner(reference.data, reference.input_name)

    def latency(self, student: Runner) -> Optional[float]:
        """The latency ratio of ``student`` (None when ``rounds`` is 0)."""
        if not self.rounds:
            return None
        self.prepare()
        image = np.zeros((1, 3, 32, 32), np.float32)
        return latency_ratio(student, self._reference, image, self.rounds)


def measure(path: PathLike, student_id: str, bench: Bench) -> OnnxMeasurement:
    """Check, count, evaluate and time the submission at ``path``; problems go into ``.problem``."""
    from grader import bitops, onnxload
    started = time.perf_counter()
    result = OnnxMeasurement(student_id)
    try:
        checked = onnxload.load(path)
        try:
            costs = bitops.node_costs(checked.inferred)
        except ValueError as error:
            raise SubmissionError(f"its cost cannot be counted ({error})") from None
        result.bit_ops, result.macs = sum(c.bit_ops for c in costs), sum(c.macs for c in costs)
        result.table = bitops.table(costs)
        run = runner(checked.data, checked.input_name)
        result.correct, result.total = bench.evaluator(run, checked.free_batch)
        result.latency_ratio = bench.latency(run)
    except SubmissionError as error:
        result.problem = f"invalid: {error}"
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def measure_key(bench: Bench) -> str:
    """Everything a cached measurement depends on besides the file: the code that checks and counts, ONNX and
    ONNX Runtime's versions, the evaluation and the reference."""
    import onnx
    import onnxruntime
    code = hashlib.sha256()
    for name in ("onnx_measure.py", "onnxload.py", "bitops.py", "homework.py"):
        code.update(Path(__file__).with_name(name).read_bytes())
    return f"onnx-code-{code.hexdigest()[:16]}:onnx{onnx.__version__}:ort{onnxruntime.__version__}:{bench.key}"
