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


@pytest.fixture(scope="module")
def labelled():
    generator = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator))
            for _ in range(3)]


def test_train_qat_trains_the_fake_quantised_copy_only(setup, labelled):
    model, _, _ = setup
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prepared = legacy_quant.prepare_qat(model, labelled[0][0], "x86")
    start = {name: p.detach().clone() for name, p in prepared.named_parameters()}
    losses = int8.train_qat(prepared.eval(), labelled, torch.optim.SGD(prepared.parameters(), lr=0.05))
    assert prepared.training and len(losses) == len(labelled) and all(isinstance(v, float) for v in losses)
    assert all(not torch.equal(p, start[name]) for name, p in prepared.named_parameters())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    assert all(float(scale.min()) > 0 for _, scale in legacy_quant.fake_quant_scales(prepared))


def test_frozen_observers_keep_their_scales(setup, labelled):
    model, _, _ = setup
    prepared = legacy_quant.prepare_qat(model, labelled[0][0], "x86")
    int8.train_qat(prepared, labelled[:1], torch.optim.SGD(prepared.parameters(), lr=0.05))
    legacy_quant.freeze_observers(prepared)
    frozen = dict(legacy_quant.fake_quant_scales(prepared))
    int8.train_qat(prepared, labelled[1:], torch.optim.SGD(prepared.parameters(), lr=0.05))
    assert frozen and all(torch.equal(scale, frozen[name]) for name, scale in legacy_quant.fake_quant_scales(prepared))


def test_the_int8_model_computes_what_the_fake_quantised_one_did(setup, labelled):
    """QAT's premise: once converted, the INT8 model gives (almost) the logits its fake-quantised copy gave.

    Checked with qnnpack, whose kernels the fake-quantisers follow closely (3.5% of the largest logit here); with
    x86 the simulation is looser on this toy model (13%), though the converted model is as close to the float one.
    """
    model, _, x = setup
    prepared = legacy_quant.prepare_qat(model, labelled[0][0], "qnnpack")
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.0005, momentum=0.9)
    int8.train_qat(prepared, labelled, optimizer)
    legacy_quant.freeze_observers(prepared)
    int8.train_qat(prepared, labelled, optimizer)
    with torch.no_grad():
        simulated = prepared.eval()(x)
        same, relative = agreement(legacy_quant.convert_static(prepared)(x), simulated)
    assert same >= 0.9 and relative < 0.05


def test_quantize_qat_is_int8_and_deterministic(setup, labelled):
    model, _, x = setup
    quantized = int8.quantize_qat(model, labelled, epochs=2, lr=0.0005)
    again = int8.quantize_qat(model, labelled, epochs=2, lr=0.0005)
    for name in LAYERS:
        weight = getattr(quantized, name).weight()
        assert weight.dtype == torch.qint8 and weight.qscheme() == torch.per_channel_affine, name
    untrained = int8.quantize_qat(model, labelled, epochs=1, lr=0.0)  # observers only: close to the float model
    with torch.no_grad():
        assert torch.equal(quantized(x), again(x))  # one thread, the same batches: the same INT8 model
        same, relative = agreement(untrained(x), model(x))
    assert same >= 0.8 and relative < 0.2
    with pytest.raises(ValueError, match="at least one batch"):
        int8.quantize_qat(model, [])
