"""The homework's facts, in one place: what a TA changes next term is one line here.

Every module, command-line default, generated document and test reads these
names instead of restating them. The module uses the standard library only,
so it travels into the student's box with the worker (``grader/box.py``), and
the handout carries a copy (``solutions/homework.py`` is a link to this file):
students read the gate, the points and what to hand in here, and
``check_submission.py`` checks against the same facts.

What is *computed* rather than written here (it follows the code itself):

* the original model's byte count: :func:`grader.reference.original_bytes`,
  from the reference ``AlexNet`` of ``solutions/net/models.py``;
* the tests and their points: collected from ``grader/suites/`` and checked
  against ``PARTS`` (the tests of a part add up to its points).
"""
import re
from dataclasses import dataclass
from typing import Tuple

TITLE = "Deep Compression of AlexNet on CIFAR-10"
GRADEBOOK_COLUMN = "Deep Compression"
"""The grade's column in a course site's gradebook (``python -m grader export --assignment`` overrides it)."""

# --------------------------------------------------------------------------- the model

MODEL = ("net/models.py", "AlexNet")
"""Where the compressed model is defined (file under ``solutions/``, class name)."""

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "fc3")
"""The model's weight layers, in order (convolutions first): the names the suites' small models and the
leaderboard's loader use. ``tests/test_homework.py`` checks them against ``MODEL``."""

CONV_LAYERS = tuple(name for name in LAYERS if name.startswith("conv"))
FC_LAYERS = tuple(name for name in LAYERS if name.startswith("fc"))

# --------------------------------------------------------------------------- the parts and their points


@dataclass(frozen=True)
class Part:
    """One graded part of the homework: its name (as in grades.csv), its points and the TODOs it grades."""
    name: str
    points: float
    todos: Tuple[str, ...]
    summary: str


PARTS = (
    Part("prune", 70.0, ("net/prune.py: _prune", "net/prune.py: prune_by_std", "net/prune.py: prune_by_percentile",
                         "pruning.py: zero_pruned_gradients", "pruning.py: zero_pruned_weights"),
         "magnitude pruning and retraining with the pruned weights held at zero"),
    Part("quantize", 10.0, ("net/quantization.py: apply_weight_sharing (conv layers)",),
         "k-means weight sharing of the conv layers"),
    Part("huffman", 10.0, ("net/huffmancoding.py: huffman_encode_conv", "net/huffmancoding.py: huffman_decode_conv"),
         "Huffman coding of the conv layers' sparse weights"),
)
PART_NAMES = tuple(part.name for part in PARTS)
PART_POINTS = {part.name: part.points for part in PARTS}
CODE_POINTS = sum(PART_POINTS.values())

# --------------------------------------------------------------------------- Part 2: deploy (make it fast)

DEPLOY_PARTS = (
    Part("channels", 12.0, ("deploy/channels.py: filter_scores", "deploy/channels.py: channels_to_keep",
                            "deploy/channels.py: flattened_features", "deploy/channels.py: remove_channels",
                            "deploy/channels.py: schedules"),
         "channel pruning that removes filters and repairs their consumers, and gradual schedules"),
    Part("lowrank", 8.0, ("deploy/lowrank.py: truncated_svd", "deploy/lowrank.py: rank_for_energy",
                          "deploy/lowrank.py: factorize_conv"),
         "truncated-SVD factorisation of Linear and Conv2d layers"),
    Part("distill", 4.0, ("deploy/distill.py: distillation_loss",),
         "the temperature-scaled knowledge-distillation loss"),
    Part("int8", 6.0, ("deploy/int8.py: calibrate", "deploy/int8.py: quantize_static",
                       "deploy/int8.py: quantize_linears"),
         "static (calibrated) and dynamic INT8 quantisation in PyTorch"),
    Part("onnx", 10.0, ("deploy/onnx_int8.py: export_onnx", "deploy/onnx_int8.py: BatchReader.get_next",
                        "deploy/onnx_int8.py: quantize_onnx", "deploy/onnx_int8.py: agreement"),
         "ONNX export, ONNX Runtime INT8 (QDQ, per-channel) and the agreement check"),
)
DEPLOY_PART_NAMES = tuple(part.name for part in DEPLOY_PARTS)
DEPLOY_PART_POINTS = {part.name: part.points for part in DEPLOY_PARTS}
DEPLOY_POINTS = sum(DEPLOY_PART_POINTS.values())

DEPLOY_SCORING = "separate"
"""How Part 2 counts: ``"separate"`` (its own total out of ``DEPLOY_POINTS``; Part 1's total is unchanged)
or ``"bonus"`` (its points come on top of Part 1's ``TOTAL_POINTS``). Read through :func:`deploy_total`."""
DEPLOY_SCORINGS = ("separate", "bonus")

DEPLOY_STUDENT_FILES = ("deploy/channels.py", "deploy/lowrank.py", "deploy/distill.py", "deploy/int8.py",
                        "deploy/onnx_int8.py")
"""The files a Part 2 submission holds and its suites read."""
DEPLOY_PROVIDED_FILES = ("deploy/__init__.py", "deploy/legacy_quant.py", "deploy/pipeline.py", "deploy/report.py")
"""Part 2's provided files (on top of ``PROVIDED_FILES``): the grader uses its own copies."""


def deploy_total() -> float:
    """The points Part 2's score is out of: ``DEPLOY_POINTS`` alone, or Part 1's total plus them (bonus)."""
    if DEPLOY_SCORING not in DEPLOY_SCORINGS:
        raise ValueError(f"DEPLOY_SCORING must be one of {DEPLOY_SCORINGS}, not {DEPLOY_SCORING!r}")
    return DEPLOY_POINTS if DEPLOY_SCORING == "separate" else TOTAL_POINTS + DEPLOY_POINTS


# --------------------------------------------------------------------------- the ranking

GATE = "58.00"
"""Accuracy (percent, on the full test set) a model must be strictly above to be ranked."""
RANKING_POINTS = (10, 5, 0)
"""Points of the top, middle and bottom third of the ranked models."""
RANKING_NAME = "ranking"
TOTAL_POINTS = CODE_POINTS + RANKING_POINTS[0]
TEST_IMAGES = 10_000
"""Test images the leaderboard measures every model on (the whole CIFAR-10 test set)."""
MODEL_SUFFIX = ".ptmodel"
MAX_DISTINCT_VALUES = 2 ** 20
"""A weight tensor with more distinct values than this is not weight-shared: the leaderboard refuses the model."""

# --------------------------------------------------------------------------- what students hand in

STUDENT_FILES = ("net/prune.py", "net/quantization.py", "net/huffmancoding.py", "pruning.py")
"""The files a submission holds and the grader reads; a missing one costs the tests of its TODOs."""
PROVIDED_FILES = ("util.py", "net/__init__.py", "net/models.py", "net/huffman_core.py")
"""The files the homework provides: the grader uses its own copies, never the student's."""
SCRIPTS = ("pruning.py", "weight_share.py", "huffman_encode.py")
"""The handout's three steps, run in this order."""

STUDENT_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,63}")
"""A student id: the name of their file without its suffix, after :func:`student_id` has cleaned it."""


def student_id(stem: str) -> str:
    """The student id for a submission named ``stem`` (a file name without suffix), the same for every command.

    Characters outside ``STUDENT_ID`` become ``_`` (``Li Wei.zip`` is ``Li_Wei``), leading punctuation is
    dropped and the id is cut at 64 characters; an empty result is ``_``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.@+-]+", "_", stem.strip()).lstrip("_.@+-")[:64]
    return cleaned or "_"


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one submission may use when its code is graded. Times in seconds, sizes in MB."""
    test_timeout_s: float = 60.0
    submission_timeout_s: float = 900.0
    memory_mb: int = 2048
    """On top of what the preloaded libraries (torch...) already use."""
    file_mb: int = 64
    disk_mb: int = 512
    processes: int = 256


OUTPUT_CHARACTERS = 4000
"""Characters of feedback kept per test."""
PRINTED_CHARACTERS = 1000
"""Characters of what the student's code printed kept per test (inside the feedback)."""
LEADERBOARD_TIMEOUT_S = 600.0
"""Seconds allowed to measure one model."""
