"""The microcontroller track (solutions/mcu/): binary weights, packing, the budget, pruning, the C export."""
import numpy as np
import pytest
import torch

from homework import MCU_BOARDS as BOARDS, MCU_CODE_BYTES as CODE_BYTES, MCU_RUNTIME_RESERVE_BYTES as RESERVE
from mcu import toolchain
from mcu.binary import SignSTE, binarize, pack_signs, unpack_signs
from mcu.budget import LayerShape, check, flash_bytes, latency_s, sram_bytes
from mcu.export import arena_bytes, header, integer_logits, integerize
from mcu.model import TinyNet, downsample, to_input
from mcu.prune import fit_to_budget
from tests.conftest import SOLUTIONS, run_python

needs_gcc = pytest.mark.skipif(not toolchain.shutil.which("gcc"), reason="no host gcc to compile the export")
needs_avr = pytest.mark.skipif(not toolchain.avr_available(),
                               reason="avr-gcc, avr-size or simavr missing (apt-get install gcc-avr avr-libc "
                                      "binutils-avr simavr): the AVR measurement cannot run")


def calibrated(channels, seed=0, images=48):
    """A binary TinyNet whose BatchNorm statistics come from random uint8 images, and those images."""
    torch.manual_seed(seed)
    model = TinyNet(channels)
    x = torch.randint(0, 256, (images, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.uniform_(0.5, 1.5)
        model.train()
        for _ in range(3):
            model(to_input(x))
    return model.eval(), x


def test_uno_board_is_the_one_the_issue_names():
    uno = BOARDS["uno"]
    assert (uno.flash_bytes, uno.sram_bytes, uno.clock_hz, uno.avr) == (32_256, 2_048, 16_000_000, True)
    assert {"esp32", "pico"} <= set(BOARDS)


def test_ste_passes_the_gradient_only_where_the_weight_is_within_one():
    weight = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.01], requires_grad=True)
    out = SignSTE.apply(weight)
    out.backward(torch.arange(1.0, 8.0))
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert weight.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]


def test_binarize_uses_one_scale_per_output_channel_and_the_ste():
    weight = torch.tensor([[0.5, -0.1, 0.3], [-2.0, 4.0, 0.0]], requires_grad=True)
    out = binarize(weight)
    assert torch.allclose(out.detach(), torch.tensor([[0.3, -0.3, 0.3], [-2.0, 2.0, 2.0]]))
    out.sum().backward()
    assert torch.allclose(weight.grad, torch.tensor([[0.3, 0.3, 0.3], [0.0, 0.0, 2.0]]))


@pytest.mark.parametrize("n", [1, 8, 13, 27, 64])
def test_pack_round_trip_and_bit_order(n):
    signs = torch.where(torch.rand(5, n, generator=torch.Generator().manual_seed(n)) < 0.5, -1.0, 1.0)
    packed = pack_signs(signs)
    assert packed.dtype == torch.uint8 and packed.shape == (5, (n + 7) // 8)
    assert torch.equal(unpack_signs(packed, n), signs)
    assert np.array_equal(packed.numpy(), np.packbits(signs.numpy() > 0, axis=1, bitorder="little"))


def test_pack_refuses_values_that_are_not_signs():
    with pytest.raises(ValueError, match="binarize the weights first"):
        pack_signs(torch.tensor([[1.0, 0.5]]))


HAND = [LayerShape("conv1", (3, 4, 4), (2, 2, 2), 2, 27, 864),
        LayerShape("fc", (8,), (10,), 10, 8, 80, out_value_bytes=4)]


def test_budget_of_a_hand_computed_network():
    # conv1: 2 rows of ceil(27/8) = 4 bytes + 2 x 8 = 24; fc: 10 x 1 + 10 x 8 = 90
    assert flash_bytes(HAND, code_bytes=1000) == 1000 + 24 + 90
    # conv1: 48 in + 8 out = 56; fc: 8 in + 40 out = 48 -> the peak is 56, not the sum 104
    assert sram_bytes(HAND, reserve=100) == 156
    assert latency_s(HAND, BOARDS["uno"]) == pytest.approx(944 * BOARDS["uno"].cycles_per_mac / 16e6)
    budget = check(HAND, BOARDS["uno"])
    assert (budget.flash, budget.sram, budget.peak_layer) == (CODE_BYTES + 114, 56 + RESERVE, "conv1")
    assert budget.fits and "fits (estimate)" in budget.report()


def test_model_shapes_match_what_the_model_stores():
    model = TinyNet((4, 6, 8))
    shapes = model.shapes()
    x = torch.zeros(1, 3, 16, 16)
    for conv, norm, shape in zip(model.convs, model.norms, shapes):
        assert shape.in_shape == tuple(x.shape[1:])
        x = torch.nn.functional.max_pool2d(norm(conv(x)), 2)
        assert shape.out_shape == tuple(x.shape[1:])
    assert shapes[-1].in_shape == (8 * 2 * 2,) and shapes[-1].out_bytes == 40
    assert sum(s.macs for s in shapes) == 16 * 16 * 27 * 4 + 8 * 8 * 36 * 6 + 4 * 4 * 54 * 8 + 32 * 10


@pytest.mark.parametrize("index", [0, 2])
def test_removing_a_channel_is_the_same_as_silencing_it(index):
    torch.manual_seed(1)
    model = TinyNet((4, 5, 6), binary=False).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        model.norms[index].weight[1] = 0.0
        model.norms[index].bias[1] = 0.0
        before = model(x)
        model.remove_channel(index, 1)
        assert torch.allclose(model(x), before, atol=1e-5)
    assert model.channels[index] == [4, 5, 6][index] - 1


def test_fit_to_budget_prunes_the_sram_peak_until_the_estimate_fits():
    model, _ = calibrated((24, 32, 32))
    assert not check(model.shapes(), BOARDS["uno"]).fits
    removed = fit_to_budget(model, BOARDS["uno"])
    assert check(model.shapes(), BOARDS["uno"]).fits
    assert {name for name, _ in removed} == {"conv1"} and model.channels == [24 - len(removed), 32, 32]
    model(to_input(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)))   # still a working network


def test_downsample_is_the_rounded_box_average():
    images = torch.arange(4 * 4, dtype=torch.uint8).reshape(1, 1, 4, 4).repeat(1, 3, 1, 1) * 10
    small = downsample(images, 2)
    assert small.dtype == torch.uint8 and small[0, 0].tolist() == [[25, 45], [105, 125]]


@needs_gcc
def test_c_code_computes_the_same_logits_as_python():
    model, x = calibrated((8, 12, 16), seed=3)
    layers = integerize(model, x)
    expected = integer_logits(layers, x)
    assert np.array_equal(toolchain.host_logits(layers, x), expected)
    float_classes = model(to_input(x)).argmax(1).numpy()
    assert (expected.argmax(1) == float_classes).mean() >= 0.8, "integer arithmetic far from the float model"


def test_header_keeps_weights_const_and_in_progmem_on_avr():
    model, x = calibrated((4, 4, 4))
    layers = integerize(model, x)
    text = header(layers)
    assert "static const uint8_t mcu_w0[16] MCU_FLASH" in text      # 4 channels x ceil(27 / 8) bytes
    assert f"#define MCU_ARENA_BYTES {arena_bytes(layers)}" in text and arena_bytes(layers) == 768 + 4 * 64
    assert "PROGMEM" in (SOLUTIONS / "mcu" / "infer.h").read_text()


@needs_avr
def test_avr_build_predicts_like_python_and_reports_real_sizes():
    model, x = calibrated((4, 8, 8), seed=5)
    layers = integerize(model, x)
    measured = toolchain.avr_measure(layers, x[0])
    assert measured.predicted == int(integer_logits(layers, x[:1])[0].argmax())
    assert measured.bss >= arena_bytes(layers) and measured.stack > 0 and measured.cycles > 0
    assert measured.text > sum(layer.packed.size for layer in layers) and measured.fits("uno")


def test_training_script_refuses_bad_channels_with_a_message(tmp_path):
    done = run_python(["mcu_train.py", "--channels", "16,x", "--data-dir", str(tmp_path)], cwd=SOLUTIONS)
    assert done.returncode == 2 and "--channels takes positive integers" in done.stderr
    assert "Traceback" not in done.stderr
