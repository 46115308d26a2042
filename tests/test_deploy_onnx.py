"""ONNX export and ONNX Runtime INT8 (solutions/deploy/onnx_int8.py): one export, then its properties.

The export (torch.export + the ONNX translation) costs about 15 s of CPU the
first time in a process, so this module exports the small AlexNet once.
"""
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from deploy import onnx_int8  # noqa: E402
from grader.worker.models import small_alexnet  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("onnx")
    generator = torch.Generator().manual_seed(0)
    model = small_alexnet(seed=2, trainable=True).eval()
    batches = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(4)]
    float_path = onnx_int8.export_onnx(model, batches[0][:2], folder / "model.onnx")
    int8_path = onnx_int8.quantize_onnx(float_path, folder / "model_int8.onnx", batches)
    return model, folder, float_path, int8_path, torch.randn(40, 3, 32, 32, generator=generator)


def test_export_is_one_file_with_a_free_batch_size(exported):
    model, folder, float_path, int8_path, x = exported
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model_int8.onnx"]
    graph = onnx.load(str(float_path)).graph
    assert [i.name for i in graph.input] == [onnx_int8.INPUT] and [o.name for o in graph.output] == [onnx_int8.OUTPUT]
    with torch.no_grad():
        want = model(x)
    got = onnx_int8.run_onnx(float_path, x)
    assert got.shape == (40, 10)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_int8_model_is_qdq_with_per_channel_int8_weights(exported):
    _, _, _, int8_path, _ = exported
    model = onnx.load(str(int8_path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    initializers = {i.name: i for i in model.graph.initializer}
    conv_weights = [node for node in model.graph.node if node.op_type == "DequantizeLinear"
                    and node.input[0] in initializers and len(initializers[node.input[0]].dims) == 4]
    assert len(conv_weights) == 5
    for node in conv_weights:
        data, scale = initializers[node.input[0]], initializers[node.input[1]]
        assert data.data_type == onnx.TensorProto.INT8 and list(scale.dims) == [data.dims[0]]


def test_int8_model_agrees_with_the_float_model(exported):
    model, _, _, int8_path, x = exported
    with torch.no_grad():
        want = model(x)
    check = onnx_int8.agreement(want, onnx_int8.run_onnx(int8_path, x))
    assert check["top1_agreement"] >= 0.85
    assert 0 < check["max_abs_diff"] < 0.15 * want.abs().max().item()


def test_agreement_on_known_logits():
    reference = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    assert onnx_int8.agreement(reference, torch.tensor([[1.0, 2.5], [0.0, 4.0]])) == \
        {"top1_agreement": 0.5, "max_abs_diff": 4.0}
    with pytest.raises(ValueError, match="shapes"):
        onnx_int8.agreement(reference, torch.zeros(3, 2))


def test_reader_hands_out_each_batch_once():
    batches = [torch.full((1, 2), float(i)) for i in range(3)]
    reader = onnx_int8.BatchReader(batches, "x")
    seen = [reader.get_next() for _ in range(4)]
    assert [s["x"].tolist() for s in seen[:3]] == [[[0.0, 0.0]], [[1.0, 1.0]], [[2.0, 2.0]]] and seen[3] is None
