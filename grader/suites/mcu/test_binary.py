"""Binary weights (mcu/binary.py): binarize, the straight-through estimator, the packing and the exported header
(10 points)."""
import shutil

import numpy as np
import pytest

from grader.suites.common import fail_if
from grader.suites.mcu.common import close, images, network, state_arrays, weights
from grader.suites.student import files_of

pytestmark = pytest.mark.part("binary")

BINARIZE, STE, PACK = "mcu/binary.py: binarize", "mcu/binary.py: SignSTE.backward", "mcu/binary.py: pack_signs"
SEED = 2024
CASES = {"a conv weight (6, 3, 3, 3)": weights((6, 3, 3, 3), 0.9, SEED),
         "a linear weight (5, 7)": weights((5, 7), 0.9, SEED + 1)}
"""Every weight within (-1, 1), so the straight-through gradient passes everywhere and only binarize is tested."""
EXPORTED = (4, 6, 8)
"""Channels of the network whose header is compiled: conv1's 27 signs a row end inside a byte."""


def alpha(weight: np.ndarray) -> np.ndarray:
    """The mean |W| of each output channel, shaped to broadcast over the weight."""
    return np.abs(weight).reshape(len(weight), -1).mean(axis=1).reshape(-1, *([1] * (weight.ndim - 1)))


def upstream(weight: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, weight.shape).astype(np.float32)


@pytest.mark.points(2, todo=BINARIZE)
def test_binarize_is_sign_times_the_channel_scale(student):
    """binarize(W) is sign(W) (0 -> +1) times the mean |W| of each output channel, for a conv and a linear weight."""
    problems = []
    for name, weight in CASES.items():
        _, data = student.mcu("binarize", {"weight": weight, "grad": upstream(weight, 1)}, f"binarize on {name}")
        problems.append(close(data.get("out"), np.where(weight >= 0, 1.0, -1.0) * alpha(weight), f"binarize({name})"))
    fail_if([p for p in problems if p], "binarize(W) must be sign(W) * alpha, alpha the mean |W| of each output "
                                        "channel:")


@pytest.mark.points(2, todo=BINARIZE)
def test_binarize_passes_the_gradient_through_the_ste_only(student):
    """The gradient reaching W through binarize is the upstream gradient times alpha (alpha taken as a constant)."""
    problems = []
    for name, weight in CASES.items():
        grad = upstream(weight, 2)
        _, data = student.mcu("binarize", {"weight": weight, "grad": grad}, f"binarize on {name}")
        problems.append(close(data.get("grad"), grad * alpha(weight),
                              f"the gradient reaching {name} through binarize"))
    fail_if([p for p in problems if p], "With every |W| < 1 the gradient is the upstream one times alpha; alpha "
                                        "comes from weight.detach(), so no gradient flows through it:")


@pytest.mark.points(3, todo=STE)
def test_ste_passes_the_gradient_where_the_weight_is_within_one(student):
    """SignSTE.backward returns the incoming gradient where |W| <= 1 and 0 where |W| > 1."""
    weight = np.concatenate([weights((4, 12), 2.0, SEED + 2), np.array([[1.0, -1.0, 1.5, -1.5] * 3], np.float32)])
    grad = np.linspace(-1, 1, weight.size, dtype=np.float32).reshape(weight.shape)
    _, data = student.mcu("ste", {"weight": weight, "grad": grad}, "SignSTE on a (5, 12) weight")
    fail_if([p for p in [close(data.get("grad"), grad * (np.abs(weight) <= 1), "the gradient reaching W")] if p],
            "SignSTE (clipped straight-through estimator) on weights between -2 and 2, some exactly +-1:")


@pytest.mark.points(2, todo=PACK)
def test_pack_signs_puts_weight_i_in_bit_i_mod_8(student):
    """pack_signs packs each row into ceil(n / 8) uint8 bytes: weight i in bit i % 8 of byte i // 8, 1 for +1."""
    problems = []
    for seed, shape in ((SEED + 3, (3, 21)), (SEED + 4, (2, 16))):
        signs = np.where(weights(shape, 1.0, seed) >= 0, 1.0, -1.0).astype(np.float32)
        _, data = student.mcu("pack", {"signs": signs}, f"pack_signs of {shape} signs")
        expected = np.packbits(signs > 0, axis=1, bitorder="little")
        packed = np.asarray(data.get("packed", np.zeros(0)))
        if packed.dtype != np.uint8 or packed.shape != expected.shape:
            problems.append(f"pack_signs of {shape} signs returned {packed.dtype} {packed.shape}, expected uint8 "
                            f"{expected.shape} (ceil({shape[1]} / 8) bytes a row)")
        elif not np.array_equal(packed, expected):
            row, column = np.argwhere(packed != expected)[0]
            msb_first = np.array_equal(packed, np.packbits(signs > 0, axis=1, bitorder="big"))
            problems.append(f"{shape} signs: row {row}, byte {column} is {packed[row, column]:08b}, expected "
                            f"{expected[row, column]:08b}" + (" (weight 0 went to the most significant bit)"
                                                              if msb_first else ""))
    fail_if(problems, "pack_signs(signs), signs +1/-1 of shape (rows, n):")


@pytest.mark.points(1, todo=PACK)
def test_exported_header_compiled_with_gcc_predicts_like_the_reference(student, reference):
    """The C header the export writes with your pack_signs, compiled with gcc, computes the reference integer
    network's logits exactly on 100 images."""
    if shutil.which("gcc") is None:
        pytest.exit("gcc is not installed: the microcontroller suite compiles the exported header with it "
                    "(Debian: apt-get install gcc)", returncode=3)
    export, toolchain = reference("mcu/export.py"), reference("mcu/toolchain.py")
    model = network(reference, EXPORTED, SEED + 5)
    calibration, test = images(SEED + 6, 64), images(SEED + 7, 100)
    expected_layers = export.integerize(model, calibration)
    scales = np.array(export.calibrate(model, calibration), dtype=np.float64)
    _, data = student.mcu("export", {**state_arrays(model), "scales": scales}, "the export of a (4, 6, 8) network",
                          channels=list(EXPORTED))
    text = files_of(data).get("mcu_model.h")
    if text is None:
        raise AssertionError("the export sent back no header")
    try:
        layers = export.parse_header(text.decode("ascii"))
    except UnicodeDecodeError:
        raise AssertionError("the header the export wrote is not ASCII text; mcu/export.py writes ASCII only") from None
    except export.HeaderError as error:
        raise AssertionError(f"the header the export wrote cannot be used (it was not compiled): {error}") from None
    shapes = [(layer.kind, tuple(layer.in_shape), layer.out_channels) for layer in layers]
    wanted = [(layer.kind, tuple(layer.in_shape), layer.out_channels) for layer in expected_layers]
    if shapes != wanted:
        raise AssertionError(f"the header describes the layers {shapes}, not the exported network's {wanted}")
    logits = toolchain.host_logits(layers, test)
    same = int((logits == export.integer_logits(expected_layers, test)).all(axis=1).sum())
    if same != len(test):
        found = next(((i, layer.packed, ours.packed) for i, (layer, ours) in enumerate(zip(layers, expected_layers))
                      if not np.array_equal(layer.packed, ours.packed)), None)
        where = "" if found is None else (f"; layer {found[0]}'s packed signs differ from the reference's first at "
                                          f"row {np.argwhere(found[1] != found[2])[0][0]}")
        raise AssertionError(f"compiled with gcc, the header gives the reference's logits on {same} of {len(test)} "
                             f"images{where} (the C code reads weight i from bit i % 8 of byte i // 8)")
