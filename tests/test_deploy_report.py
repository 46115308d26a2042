"""The evaluation report (solutions/deploy/report.py): its numbers on hand-built cases, and the files it writes."""
import json

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import util
from deploy import int8, report

# conv: 4 filters of 3x3x3 on a 16x16 output (stride 2) = 4 * 256 * 27 MACs; fc: 1024 inputs x 10 outputs.
SMALL_NET_MACS = 4 * 16 * 16 * 27 + 1024 * 10


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10)).eval()


class Constant(nn.Module):
    """Predicts class ``label`` for every image."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(images),), self.label), 10).float() * self.scale


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 3, 9, 9, 5])
    return util.ImageSet(torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=generator),
                         labels)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = report.confusion_matrix(torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 1, 1, 2, 3]), classes=4)
    assert matrix.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert report.per_class_accuracy(matrix) == [100.0, 50.0, 100.0, 0.0]


def test_measure_of_a_model_with_known_outputs(images, tmp_path):
    model = Constant(3)
    row = report.measure("constant", model, images, model, report.save(model, tmp_path / "c.pt"),
                         rounds=2, per_round=2, profile=False)
    assert row["accuracy"] == pytest.approx(30.0)  # three of the ten images are of class 3
    matrix = torch.tensor(row["confusion_matrix"])
    assert matrix[:, 3].tolist() == torch.bincount(images.labels, minlength=10).tolist()
    assert matrix.sum() == matrix[:, 3].sum() == 10
    assert row["per_class_accuracy"][3] == 100.0 and row["per_class_accuracy"][1] == 0.0
    assert row["latency_ratio"] == 1.0 and row["latency_ms"] > 0  # itself as the reference
    assert row["parameters"] == 1 and row["macs"] == 0


def test_macs_of_a_known_net_match_the_hand_count_and_torch_flop_counter():
    model = small_net()
    assert report.macs(model) == SMALL_NET_MACS
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    assert 2 * report.macs(model) == counter.get_total_flops()  # a multiply-accumulate is two flops


def test_macs_and_parameters_survive_int8_and_low_rank_layers():
    model = small_net()
    quantized = int8.quantize_static(model, [torch.randn(4, 3, 32, 32)])
    assert report.macs(quantized) == SMALL_NET_MACS
    assert report.parameter_count(quantized) == report.parameter_count(model) == 4 * 27 + 4 + 10240 + 10
    dynamic = int8.quantize_linears(model)
    assert report.macs(dynamic) == SMALL_NET_MACS and report.parameter_count(dynamic) == report.parameter_count(model)
    factored = nn.Sequential(nn.Linear(100, 7, bias=False), nn.Linear(7, 50))  # two thin layers: 7 * (100 + 50)
    assert report.macs(factored, torch.zeros(1, 100)) == 7 * 150


def test_activation_bytes_is_the_largest_layer_input_plus_output():
    # the conv reads 3x32x32 floats and writes 4x16x16: 4 * (3072 + 1024) bytes, more than any other layer
    assert report.activation_bytes(small_net()) == 4 * (3 * 32 * 32 + 4 * 16 * 16)


def test_bytes_are_the_size_of_the_file_written(tmp_path):
    model = small_net()
    path = report.save(model, tmp_path / "deep" / "model.pt")
    assert report.bytes_on_disk(path) == path.stat().st_size > 4 * report.parameter_count(model)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from deploy import onnx_int8
    folder = tmp_path_factory.mktemp("onnx")
    example = torch.randn(2, 3, 32, 32)
    float_path = onnx_int8.export_onnx(small_net(), example, folder / "small.onnx")
    int8_path = onnx_int8.quantize_onnx(float_path, folder / "small_int8.onnx", [torch.randn(4, 3, 32, 32)])
    return float_path, int8_path


def test_onnx_counts_match_the_pytorch_ones(onnx_files):
    parameters = report.parameter_count(small_net())
    for path in onnx_files:
        assert report.macs(path) == SMALL_NET_MACS, path.name
        assert report.parameter_count(path) == parameters, path.name
        assert report.bytes_on_disk(path) == path.stat().st_size
    assert report.activation_bytes(onnx_files[0]) == 4 * (3 * 32 * 32 + 4 * 16 * 16)
    # the INT8 file's weight dequantisation is folded, so no 10x1024 float "activation" appears
    assert report.activation_bytes(onnx_files[1]) <= 4 * (3 * 32 * 32 + 4 * 16 * 16)


def test_onnx_external_data_files_are_counted(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    weight = numpy_helper.from_array(torch.randn(64, 64).numpy(), "weight")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "weight"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])],
                                   [weight])
    path = tmp_path / "external.onnx"
    onnx.save_model(onnx.helper.make_model(graph), str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert report.bytes_on_disk(path) == path.stat().st_size + (tmp_path / "weights.bin").stat().st_size
    assert report.macs(path) == 64 * 64 and report.parameter_count(path) == 64 * 64


def test_latency_is_a_ratio_against_the_reference_at_one_thread():
    torch.set_num_threads(2)
    small, big = nn.Linear(512, 512).eval(), nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)]).eval()
    timing = report.latency(small, big, torch.zeros(1, 512), rounds=2, per_round=3)
    assert timing["ratio"] == pytest.approx(timing["ms"] / timing["reference_ms"])
    assert torch.get_num_threads() == 2  # restored after running at LATENCY_THREADS


def test_profile_says_where_the_time_goes(onnx_files):
    ops = report.profile_operators(small_net(), runs=3)
    names = {op["op"] for op in ops}
    assert "aten::addmm" in names and 0 < sum(op["percent"] for op in ops) <= 100.0 + 1e-6
    onnx_ops = {op["op"] for op in report.profile_operators(onnx_files[1], runs=3)}
    assert onnx_ops & {"QLinearConv", "QGemm", "ConvInteger", "MatMulInteger", "QLinearMatMul"}


def test_write_report_writes_json_markdown_and_plots(images, tmp_path):
    rows = []
    for label in (3, 1):
        model = Constant(label)
        rows.append(report.measure(f"c{label}", model, images, rows and Constant(3) or model,
                                   report.save(model, tmp_path / f"c{label}.pt"), rounds=1, per_round=1))
    written = report.write_report(rows, tmp_path / "report")
    names = {path.name for path in written}
    assert {"report.json", "report.md", "accuracy_vs_latency.png", "accuracy_vs_size.png", "confusion_c3.png",
            "confusion_c1.png"} <= names
    assert all(path.stat().st_size > 0 for path in written)
    assert json.loads((tmp_path / "report" / "report.json").read_text())[1]["accuracy"] == pytest.approx(20.0)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| c3 | 30.00% |" in text and "| c1 | 20.00% |" in text


def test_pareto_front_drops_the_dominated():
    rows = [{"name": "a", "accuracy": 70, "bytes": 10}, {"name": "b", "accuracy": 60, "bytes": 20},
            {"name": "c", "accuracy": 80, "bytes": 30}]
    assert [r["name"] for r in report.pareto_front(rows, "bytes")] == ["a", "c"]


def test_nothing_to_report_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        report.write_report([], tmp_path)
