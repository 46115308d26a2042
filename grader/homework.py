"""The homework's facts, in one place: what a TA changes next term is one line here.

Every module, command-line default, generated document and test reads these
names instead of restating them: Part 1's, Part 2's (``DEPLOY_*``) and the
microcontroller track's (``MCU_*``: its parts, files, input format and boards). The module uses the standard library only,
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
    Part("int8", 10.0, ("deploy/int8.py: calibrate", "deploy/int8.py: quantize_static",
                        "deploy/int8.py: quantize_linears", "deploy/int8.py: train_qat",
                        "deploy/int8.py: quantize_qat"),
         "static (calibrated) and dynamic INT8 quantisation in PyTorch, and quantisation-aware training"),
    Part("capture", 4.0, ("deploy/capture.py: capture", "deploy/capture.py: check_equivalent"),
         "graph capture with torch.export (free batch size) and the exact-equivalence check"),
    Part("onnx", 10.0, ("deploy/onnx_int8.py: export_onnx", "deploy/onnx_int8.py: BatchReader.get_next",
                        "deploy/onnx_int8.py: quantize_onnx", "deploy/onnx_int8.py: agreement"),
         "ONNX export, ONNX Runtime INT8 (QDQ, per-channel) and the agreement check"),
    Part("optimiser", 6.0, ("deploy/optimiser.py: broken_constraints", "deploy/optimiser.py: ranking_key",
                            "deploy/optimiser.py: choose"),
         "the hardware-aware optimiser's decision: constraints, each target's ranking, the choice"),
)
DEPLOY_PART_NAMES = tuple(part.name for part in DEPLOY_PARTS)
DEPLOY_PART_POINTS = {part.name: part.points for part in DEPLOY_PARTS}
DEPLOY_POINTS = sum(DEPLOY_PART_POINTS.values())

DEPLOY_SCORING = "separate"
"""How Part 2 counts: ``"separate"`` (its own total out of ``DEPLOY_POINTS``; Part 1's total is unchanged)
or ``"bonus"`` (its points come on top of Part 1's ``TOTAL_POINTS``). Read through :func:`deploy_total`."""
DEPLOY_SCORINGS = ("separate", "bonus")

DEPLOY_STUDENT_FILES = ("deploy/channels.py", "deploy/lowrank.py", "deploy/distill.py", "deploy/int8.py",
                        "deploy/capture.py", "deploy/onnx_int8.py", "deploy/optimiser.py")
"""The files a Part 2 submission holds and its suites read."""
DEPLOY_PROVIDED_FILES = ("deploy/__init__.py", "deploy/legacy_quant.py", "deploy/pipeline.py", "deploy/report.py",
                         "deploy/hardware.py", "deploy/plans.py")
"""Part 2's provided files (on top of ``PROVIDED_FILES``): the grader uses its own copies."""
DEPLOY_NAME = "deploy"
"""Part 2's name where it appears beside Part 1's parts: its folder, and its total's column."""
DEPLOY_COLUMN = f"{DEPLOY_NAME}_total"
"""Part 2's total in grades.csv and final_grades.csv (Part 1's is ``code_total`` and ``total``)."""
DEPLOY_GRADEBOOK_COLUMN = f"{GRADEBOOK_COLUMN} Part 2"
"""Part 2's column in a course site's gradebook (``python -m grader export --total deploy``)."""


DEPLOY_ABSENT = (f"Not graded: your submission holds no {DEPLOY_NAME}/ folder (Part 2). To have Part 2 "
                 f"graded, hand in {', '.join(DEPLOY_STUDENT_FILES)} with Part 1's files "
                 "(`python check_submission.py <id>` packs them).")
"""The message of every Part 2 test of a submission without ``deploy/``."""


def deploy_total() -> float:
    """The points Part 2's score is out of: ``DEPLOY_POINTS`` alone, or Part 1's total plus them (bonus)."""
    if DEPLOY_SCORING not in DEPLOY_SCORINGS:
        raise ValueError(f"DEPLOY_SCORING must be one of {DEPLOY_SCORINGS}, not {DEPLOY_SCORING!r}")
    return DEPLOY_POINTS if DEPLOY_SCORING == "separate" else TOTAL_POINTS + DEPLOY_POINTS


# --------------------------------------------------------------------------- the microcontroller track (mcu/)
# 1-bit weights on an Arduino UNO: ``solutions/mcu/`` reads these through ``homework.py`` (docs/MCU.md).

MCU_PARTS = (
    Part("binary", 10.0, ("mcu/binary.py: binarize", "mcu/binary.py: SignSTE.backward", "mcu/binary.py: pack_signs"),
         "binary weights (sign times a per-channel scale), the straight-through estimator, the bit packing"),
    Part("budget", 7.0, ("mcu/budget.py: flash_bytes", "mcu/budget.py: sram_bytes", "mcu/budget.py: latency_s"),
         "the flash, SRAM and latency estimate of a network on a board"),
    Part("fit", 3.0, ("mcu/prune.py: fit_to_budget",), "channel pruning until the estimate fits the board"),
)
MCU_PART_NAMES = tuple(part.name for part in MCU_PARTS)
MCU_PART_POINTS = {part.name: part.points for part in MCU_PARTS}
MCU_POINTS = sum(MCU_PART_POINTS.values())
"""The track's points: a separate total, like Part 2's, never added to Part 1's."""

MCU_STUDENT_FILES = ("mcu/binary.py", "mcu/budget.py", "mcu/prune.py")
"""The files a microcontroller submission holds and its suites read."""
MCU_PROVIDED_FILES = ("homework.py", "mcu/__init__.py", "mcu/model.py", "mcu/export.py")
"""What the track's box gets from the grader's own copy (``mcu/`` imports its facts from ``homework.py``)."""

MCU_RESOLUTION = 16
"""Images are CIFAR-10 downsampled to 16x16 (2x2 box average of the 32x32 image, rounded), colour."""
MCU_IN_CHANNELS = 3
MCU_CLASSES = 10
MCU_INPUT_OFFSET = 128
"""The deployed input is ``pixel - 128`` as int8; the float model sees ``(pixel - 128) / MCU_INPUT_SCALE``."""
MCU_INPUT_SCALE = 64.0
MCU_ACTIVATION_MAX = 127
"""Activations between layers are 7-bit unsigned integers (0..127) stored as int8: ReLU, then round and clip."""
MCU_MAX_HEADER_BYTES = 1 << 20
"""The largest C header the grader reads back (a model that fits the UNO's flash writes under 200 KB)."""


@dataclass(frozen=True)
class Board:
    """A target: the memory a model may use and a clock to turn cycles into time.

    ``flash_bytes`` is what a program may occupy (after a bootloader or the
    runtime's partition), ``sram_bytes`` the RAM for data and stack.
    ``cycles_per_mac`` turns a MAC count into a latency estimate; only the
    UNO's was measured (``UNO_CYCLES_PER_MAC``), the others are stated
    guesses from their cores (a 32-bit core with a barrel shifter does a
    1-bit-weight MAC in about 3 cycles).
    """
    name: str
    chip: str
    clock_hz: int
    flash_bytes: int
    sram_bytes: int
    cycles_per_mac: float
    avr: bool = False
    """True when the board is built with ``avr-gcc`` (weights in ``PROGMEM``) and simulated by ``simavr``."""


UNO_CYCLES_PER_MAC = 79.0
"""simavr cycles of one inference divided by its MACs: 43,778,048 cycles / 554,240 MACs for channels
(16, 32, 32), avr-gcc 5.4.0 -Os (``mcu/toolchain.py``; docs/MCU.md)."""
MCU_RUNTIME_RESERVE_BYTES = 176
"""SRAM the budget sets aside beyond the activations: the stack of one inference (167 bytes measured in
simavr for channels (16, 32, 32), the int32 logits included) rounded up to 16; the build has no .data."""
MCU_CODE_BYTES = 1800
"""Flash of the inference code, its layer table and the C runtime on the ATmega328P: avr-size's .text
(4,460 B for channels (16, 32, 32)) minus the weight arrays (2,672 B), rounded up."""

MCU_BOARDS = {
    board.name: board for board in (
        Board("uno", "ATmega328P (AVR, 8-bit)", 16_000_000, 32_256, 2_048, UNO_CYCLES_PER_MAC, avr=True),
        Board("esp32", "ESP32-WROOM-32 (Xtensa LX6, 32-bit)", 240_000_000, 1_310_720, 327_680, 3.0),
        Board("pico", "RP2040 (Cortex-M0+, 32-bit)", 133_000_000, 2_097_152, 270_336, 3.0),
        Board("stm32f103", "STM32F103C8 'Blue Pill' (Cortex-M3, 32-bit)", 72_000_000, 65_536, 20_480, 3.0),
    )
}
"""UNO: 32 KB flash less Optiboot's 512 B, 2 KB SRAM. ESP32: the default partition table's 1.25 MB app slot
and the 320 KB of DRAM left to data. Pico: 2 MB QSPI flash, 264 KB SRAM. STM32F103C8: 64 KB flash, 20 KB SRAM."""
MCU_DEFAULT_BOARD = "uno"

def counted_parts() -> Tuple[str, ...]:
    """The parts whose points make a student's code total (grades.csv's ``code_total``, the final grade):
    Part 1's, and Part 2's as well when ``DEPLOY_SCORING`` is ``"bonus"``."""
    deploy_total()  # refuses an unknown setting
    return PART_NAMES + (DEPLOY_PART_NAMES if DEPLOY_SCORING == "bonus" else ())


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

# --------------------------------------------------------------------------- the deployable-model leaderboard

ONNX_SUFFIX = ".onnx"
"""A deployable submission: ``<student_id>.onnx``, one self-contained ONNX file (``python -m grader onnx-leaderboard``)."""
ONNX_GATE = "70.00"
"""Accuracy (percent, on the full test set) an ONNX model must be strictly above to be ranked by bit-operations."""
ONNX_MAX_BYTES = 128 * 2 ** 20
"""The largest ``.onnx`` file read (the dense reference AlexNet exported in float32 is about 81 MB)."""
ONNX_OPSETS = (13, 21)
"""The default-domain opset versions accepted (both ends included): what torch's exporters and ONNX Runtime's
quantiser write and ONNX Runtime runs."""
ONNX_INPUT = (3, 32, 32)
"""One float32 image, channels first, normalised as the handout does; the batch dimension is 1 or free."""
ONNX_CLASSES = 10
ONNX_OPS = ("Conv", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
            "QuantizeLinear", "DequantizeLinear", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu",
            "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "MaxPool", "AveragePool",
            "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Flatten", "Reshape", "Transpose",
            "Squeeze", "Unsqueeze", "Concat", "Identity", "Dropout", "Softmax", "LogSoftmax", "Cast",
            "Constant", "Pad")
"""The only ONNX operators (default domain) an ``.onnx`` submission may use: convolutions, matrix products,
their quantised forms, activations, pooling, normalisation and reshaping. No control flow (Loop, Scan, If),
no operator that makes a tensor of a data-dependent size, no custom or ``ai.onnx.ml`` domain."""
ONNX_MAX_ELEMENTS = 64 * 2 ** 20
"""The most elements any one tensor of an ONNX submission may have (a weight or an activation at batch 1)."""
ONNX_LATENCY_ROUNDS = 7
"""Interleaved rounds (reference, submission) whose median time ratio is the latency column."""
