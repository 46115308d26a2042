"""INT8 in PyTorch (solutions/deploy/int8.py, legacy_quant.py) on the small AlexNet."""
import pytest
import torch

from deploy import int8, legacy_quant
from grader.homework import CONV_LAYERS, FC_LAYERS, LAYERS
from grader.worker.models import small_alexnet


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    model = small_alexnet(seed=1, trainable=True).eval()
    batches = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(4)]
    return model, batches, torch.randn(32, 3, 32, 32, generator=generator)


def agreement(a, b):
    return (a.argmax(1) == b.argmax(1)).double().mean().item(), (a - b).abs().max().item() / b.abs().max().item()


def test_calibration_fills_every_observer(setup):
    model, batches, _ = setup
    prepared = legacy_quant.prepare_static(model, batches[0], "x86")
    assert all(low == float("inf") for _, low, _ in legacy_quant.observed_ranges(prepared))
    assert int8.calibrate(prepared, batches) == 4
    ranges = list(legacy_quant.observed_ranges(prepared))
    assert ranges and all(low <= high < float("inf") for _, low, high in ranges)


@pytest.mark.parametrize("backend, scheme", [("x86", torch.per_channel_affine), ("qnnpack", torch.per_tensor_affine)])
def test_static_int8_has_int8_weights_and_follows_the_float_model(setup, backend, scheme):
    """x86 scales weights per output channel; qnnpack's default (its ARM kernels) is one scale per tensor."""
    model, batches, x = setup
    quantized = int8.quantize_static(model, batches, backend)
    for name in LAYERS:
        weight = getattr(quantized, name).weight()
        assert weight.dtype == torch.qint8 and weight.qscheme() == scheme, name
    with torch.no_grad():
        same, relative = agreement(quantized(x), model(x))
    assert same >= 0.8 and relative < 0.1


def test_dynamic_quantises_the_linears_only(setup):
    model, _, x = setup
    quantized = int8.quantize_linears(model)
    assert all(getattr(quantized, n).weight().dtype == torch.qint8 for n in FC_LAYERS)
    assert all(getattr(quantized, n).weight.dtype == torch.float32 for n in CONV_LAYERS)
    with torch.no_grad():
        same, relative = agreement(quantized(x), model(x))
    assert same >= 0.9 and relative < 0.05


def test_a_missing_backend_or_calibration_is_a_clear_error(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="not available"):
        legacy_quant.use_backend("tpu")
    with pytest.raises(ValueError, match="at least one calibration batch"):
        int8.quantize_static(model, [], "x86")
