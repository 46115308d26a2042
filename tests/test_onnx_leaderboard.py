"""The deployable-model leaderboard: bit-operations, the ranking and its gate, the cache, hostile files, determinism.

Models are built with ``onnx.helper`` (``tests/onnxmodels.py``); the test set is
``tests/tinycifar.py``'s; the latency reference is a tiny conv net, not the
exported AlexNet (the export takes about 15 s; the CLI test skips latency).
"""
import csv
import math
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from grader import bitops, homework, leaderboard, onnx_leaderboard, onnx_measure, onnxload, shards
from grader.onnx_measure import Bench, OnnxCifarEvaluator
from grader.ranking import OnnxEntry, rank_entries
from grader.safeload import SubmissionError
from tests import onnxmodels as om
from tests.tinycifar import write_tiny_cifar

CONV_MACS = 4 * 32 * 32 * 27
FC_MACS = 10 * 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tiny_cifar(tmp_path_factory.mktemp("cifar"), n_train=10, n_test=200)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return om.save(om.conv_net(channels=16), tmp_path_factory.mktemp("ref") / "reference.onnx")


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- bit-operations


def test_float_conv_net_costs_32_by_32_bits_per_mac():
    costs = bitops.node_costs(onnxload.check_model(om.conv_net().SerializeToString()).inferred)
    assert [(c.op_type, c.macs, c.activation_bits, c.weight_bits) for c in costs] == \
        [("Conv", CONV_MACS, 32, 32), ("Gemm", FC_MACS, 32, 32)]
    assert bitops.bit_ops(onnxload.check_model(om.conv_net().SerializeToString()).inferred) == \
        (CONV_MACS + FC_MACS) * 32 * 32


def test_qdq_int8_conv_costs_8_by_8_bits_per_mac():
    inferred = onnxload.check_model(om.conv_net(qdq=True).SerializeToString()).inferred
    costs = bitops.node_costs(inferred)
    assert [(c.op_type, c.activation_bits, c.weight_bits) for c in costs] == [("Conv", 8, 8), ("Gemm", 32, 32)]
    assert bitops.bit_ops(inferred) == CONV_MACS * 8 * 8 + FC_MACS * 32 * 32
    assert bitops.bit_ops(inferred) < bitops.bit_ops(onnxload.check_model(om.conv_net().SerializeToString()).inferred)


def test_matmul_gemm_transposed_and_elementwise_products_are_counted():
    weight = numpy_helper.from_array(np.ones((3072, 10), np.float16), "W")
    scale = numpy_helper.from_array(np.ones((1, 3072), np.float32), "S")
    nodes = [helper.make_node("Flatten", ["images"], ["flat"]),
             helper.make_node("Mul", ["flat", "S"], ["scaled"]),            # 3,072 products
             helper.make_node("Cast", ["scaled"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["half", "W"], ["m"]),             # 3,072 x 10 MACs in float16
             helper.make_node("Cast", ["m"], ["m32"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["m32"], ["t"], perm=[1, 0]),
             helper.make_node("Gemm", ["t", "G"], ["logits"], transA=1)]   # K = 10: 10 x 10 MACs
    gemm = numpy_helper.from_array(np.eye(10, dtype=np.float32), "G")
    model = om.make(nodes, [weight, scale, gemm])
    costs = {c.op_type: c for c in bitops.node_costs(onnxload.check_model(model.SerializeToString()).inferred)}
    assert (costs["Mul"].macs, costs["Mul"].activation_bits) == (3072, 32)
    assert (costs["MatMul"].macs, costs["MatMul"].activation_bits, costs["MatMul"].weight_bits) == (30720, 16, 16)
    assert costs["Gemm"].macs == 100


def test_reference_alexnet_sized_gemm_is_exact():
    # one 4096 x 4096 layer at int8 by QDQ: 16,777,216 MACs x 8 x 8 exactly
    inits = [numpy_helper.from_array(np.zeros((4096, 3072), np.int8), "Wq"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.zeros((10, 4096), np.float32), "W2")]
    nodes = [helper.make_node("Flatten", ["images"], ["flat"]),
             helper.make_node("QuantizeLinear", ["flat", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"]),
             helper.make_node("Gemm", ["dq", "W"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "W2"], ["logits"], transB=1)]
    inferred = onnxload.check_model(om.make(nodes, inits).SerializeToString()).inferred
    assert bitops.bit_ops(inferred) == 4096 * 3072 * 64 + 4096 * 10 * 1024


# ----------------------------------------------------------------------------- ranking and gate


def test_ranked_by_bit_operations_above_the_gate_latency_aside():
    entries = [OnnxEntry("big", 9000, 10000, bit_ops=500, latency_ratio=0.1),
               OnnxEntry("small", 8000, 10000, bit_ops=100, latency_ratio=3.0),
               OnnxEntry("tie", 7100, 10000, bit_ops=100, latency_ratio=1.0),
               OnnxEntry("at-gate", 7000, 10000, bit_ops=1),
               OnnxEntry("broken", problem="invalid: x")]
    rows = rank_entries(entries, homework.ONNX_GATE)
    assert [(r.entry.student_id, r.rank) for r in rows] == \
        [("small", 1), ("tie", 1), ("big", 3), ("at-gate", None), ("broken", None)]
    assert "not above 70.00%" in rows[3].status


# ----------------------------------------------------------------------------- end to end


def build_class(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    om.save(om.colour_classifier(), folder / "alice.onnx")
    om.save(om.colour_classifier(1), folder / "bob.onnx")           # every class wrong
    om.save(om.conv_net(qdq=True), folder / "carol.onnx")
    (folder / "dave.onnx").write_bytes(b"not a model at all")
    (folder / "notes.txt").write_text("ignored")
    return folder


def run(submissions: Path, out: Path, data: Path, reference, rounds=3, **kwargs):
    return onnx_leaderboard.run(submissions, out, OnnxCifarEvaluator(data), gate="50", jobs=0, progress=False,
                                reference=reference, rounds=rounds, **kwargs)


def test_a_class_is_measured_ranked_and_published(tmp_path, data, reference):
    rows = run(build_class(tmp_path / "in"), tmp_path / "out", data, reference)
    table = {row["student_id"]: row for row in read_csv(tmp_path / "out" / "leaderboard.csv")}
    assert table["alice"]["rank"] == "1" and table["alice"]["accuracy"] == "100.00"
    assert float(table["alice"]["latency_ratio"]) > 0 and table["alice"]["fits_uno"] == "n/a"
    assert table["bob"]["qualified"] == "no" and "below the gate" in table["bob"]["status"]
    assert int(table["carol"]["bit_ops"]) == CONV_MACS * 64 + FC_MACS * 1024
    assert table["dave"]["status"].startswith("invalid: not an ONNX model")
    assert len(rows) == 4
    for name in ("leaderboard.md", "leaderboard.html", "leaderboard.png", "details/carol.txt"):
        assert (tmp_path / "out" / name).is_file()
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<script" not in page and "bit-ops" in page
    assert "Conv" in (tmp_path / "out" / "details" / "carol.txt").read_text()


def test_results_are_cached_by_file_hash(tmp_path, data, reference, monkeypatch):
    submissions = build_class(tmp_path / "in")
    run(submissions, tmp_path / "out", data, reference)
    measured = []
    real = onnx_leaderboard._measure_task
    monkeypatch.setattr(onnx_leaderboard, "_measure_task",
                        lambda s, bench: measured.append(s.student_id) or real(s, bench))
    run(submissions, tmp_path / "out", data, reference)
    assert measured == []
    om.save(om.conv_net(), submissions / "carol.onnx")             # changed: measured again, alone
    run(submissions, tmp_path / "out", data, reference)
    assert measured == ["carol"]
    assert read_csv(tmp_path / "out" / "leaderboard.csv")[-2]["student_id"] == "carol"


def test_same_input_twice_gives_identical_files(tmp_path, data, reference):
    submissions = build_class(tmp_path / "in")
    for name in ("a", "b"):
        run(submissions, tmp_path / name, data, reference, rounds=0)
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "leaderboard.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first = (tmp_path / "a" / "leaderboard.csv").read_bytes()
    run(submissions, tmp_path / "a", data, reference, rounds=0)  # a rerun (from the cache) too
    assert (tmp_path / "a" / "leaderboard.csv").read_bytes() == first


def test_shards_merge_to_the_same_ranking_and_pseudonyms_hide_ids(tmp_path, data, reference):
    submissions = build_class(tmp_path / "in")
    run(submissions, tmp_path / "one", data, reference, rounds=0)
    for k in range(2):
        run(submissions, tmp_path / "split", data, reference, rounds=0, shard=(k, 2))
    print(shards.merge(tmp_path / "split"))
    assert (tmp_path / "split" / "leaderboard.csv").read_bytes() == (tmp_path / "one" / "leaderboard.csv").read_bytes()
    run(submissions, tmp_path / "public", data, reference, rounds=0, pseudonyms=True)
    public = (tmp_path / "public" / "public" / "leaderboard.csv").read_text()
    assert "alice" not in public and "carol" not in public and len(public.splitlines()) == 5


def test_the_worker_pool_measures_and_the_cli_runs(tmp_path, data, reference, capsys):
    submissions = build_class(tmp_path / "in")
    code = onnx_leaderboard.main([str(submissions), "--out", str(tmp_path / "out"), "--data-dir", str(data),
                                  "--gate", "50", "--jobs", "1", "--latency-rounds", "1", "--reference",
                                  str(reference)])
    assert code == 0 and "4 students, 1 ranked" in capsys.readouterr().out
    assert read_csv(tmp_path / "out" / "leaderboard.csv")[0]["student_id"] == "alice"


# ----------------------------------------------------------------------------- hostile files


def custom_domain() -> onnx.ModelProto:
    model = om.make([helper.make_node("Exec", ["images"], ["logits"], domain="com.evil", command="rm -rf /")], [])
    model.opset_import.append(helper.make_opsetid("com.evil", 1))
    return model


def contrib_operator() -> onnx.ModelProto:
    return om.make([helper.make_node("FusedConv", ["images", "W"], ["logits"], domain="com.microsoft")],
                   [numpy_helper.from_array(np.zeros((10, 3, 32, 32), np.float32), "W")])


def external_data() -> onnx.ModelProto:
    model = om.colour_classifier()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "/etc/passwd"), ("offset", "0"), ("length", "120")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model


def constant_with_external_data() -> onnx.ModelProto:
    tensor = numpy_helper.from_array(np.zeros((10, 3), np.float32), "W")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    model = om.colour_classifier()
    return om.with_nodes(model, [helper.make_node("Constant", [], ["W"], value=tensor), *model.graph.node],
                         [model.graph.initializer[1]])


def loop_bomb() -> onnx.ModelProto:
    body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])])
    trips = numpy_helper.from_array(np.array(2 ** 62, np.int64), "trips")
    keep = numpy_helper.from_array(np.array(True), "keep")
    model = om.colour_classifier()
    return om.with_nodes(model, [helper.make_node("Loop", ["trips", "keep"], [], body=body), *model.graph.node],
                         [*model.graph.initializer, trips, keep])


def if_subgraph() -> onnx.ModelProto:
    branch = helper.make_graph([helper.make_node("Identity", ["images"], ["x"])], "b", [],
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)])
    keep = numpy_helper.from_array(np.array(True), "keep")
    model = om.colour_classifier()
    return om.with_nodes(model, [helper.make_node("If", ["keep"], ["x"], then_branch=branch, else_branch=branch),
                                 *model.graph.node], [*model.graph.initializer, keep])


def huge_declared_tensor() -> onnx.ModelProto:
    model = om.colour_classifier()
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[2 ** 29])  # 2 GB declared, nothing stored
    model.graph.initializer.append(huge)
    return model


def short_tensor() -> onnx.ModelProto:
    model = om.colour_classifier()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:12]
    return model


def huge_activation() -> onnx.ModelProto:
    model = om.colour_classifier()
    pads = numpy_helper.from_array(np.array([0, 0, 5000, 5000, 0, 0, 5000, 5000], np.int64), "pads")
    nodes = list(model.graph.node)
    nodes[0] = helper.make_node("GlobalAveragePool", ["padded"], ["pooled"])
    return om.with_nodes(model, [helper.make_node("Pad", ["images", "pads"], ["padded"]), *nodes],
                         [*model.graph.initializer, pads])


def wrong_output() -> onnx.ModelProto:
    model = om.colour_classifier()
    weight = numpy_helper.to_array(model.graph.initializer[0])[:5]
    bias = numpy_helper.to_array(model.graph.initializer[1])[:5]
    copy = om.with_nodes(model, list(model.graph.node),
                         [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    copy.graph.output[0].CopyFrom(om.logits_output(classes=5))
    return copy


def wrong_input() -> onnx.ModelProto:
    model = om.colour_classifier()
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64]))
    return model


def two_inputs() -> onnx.ModelProto:
    model = om.colour_classifier()
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))
    return model


def local_function() -> onnx.ModelProto:
    model = om.colour_classifier()
    model.functions.append(helper.make_function("my.funcs", "Evil", ["x"], ["y"],
                                                [helper.make_node("Identity", ["x"], ["y"])],
                                                [helper.make_opsetid("", om.OPSET)]))
    return model


def ml_domain() -> onnx.ModelProto:
    model = om.colour_classifier()
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return model


def old_opset() -> onnx.ModelProto:
    return om.make(list(om.colour_classifier().graph.node), list(om.colour_classifier().graph.initializer), opset=9)


def unknown_input_name() -> onnx.ModelProto:
    model = om.colour_classifier()
    nodes = list(model.graph.node)
    nodes[2] = helper.make_node("Gemm", ["flat", "W", "nowhere"], ["logits"], transB=1)
    return om.with_nodes(model, nodes)


def sparse_weight() -> onnx.ModelProto:
    model = om.colour_classifier()
    values = numpy_helper.from_array(np.ones(2, np.float32), "S")
    indices = numpy_helper.from_array(np.array([0, 1], np.int64), "S_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [10, 3]))
    return model


def a_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.onnx", om.colour_classifier().SerializeToString())


def a_pickle(path: Path) -> None:
    import pickle
    path.write_bytes(pickle.dumps({"os.system": "echo hi"}, protocol=2))


def garbage(path: Path) -> None:
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))


def empty_graph(path: Path) -> None:
    path.write_bytes(b"")


HOSTILE = {
    "custom_domain": (custom_domain, "operator domain 'com.evil'"),
    "contrib_operator": (contrib_operator, "outside the standard ai.onnx domain"),
    "external_data_etc_passwd": (external_data, "external data at '/etc/passwd'"),
    "constant_with_external_data": (constant_with_external_data, "external data at '../../../etc/passwd'"),
    "loop_bomb": (loop_bomb, "is a Loop, which the leaderboard does not run"),
    "if_subgraph": (if_subgraph, "is a If, which the leaderboard does not run"),
    "2GB_declared_tensor": (huge_declared_tensor, "declares 536,870,912 elements"),
    "short_tensor": (short_tensor, "stores 12 items instead of 120"),
    "huge_activation_by_pad": (huge_activation, "elements at batch 1 (limit"),
    "wrong_output_shape": (wrong_output, "must be the 10 float32 logits"),
    "wrong_input_shape": (wrong_input, "must be [batch, 3, 32, 32]"),
    "two_inputs": (two_inputs, "has 2 inputs"),
    "local_function": (local_function, "local function"),
    "ai_onnx_ml_domain": (ml_domain, "operator domain 'ai.onnx.ml'"),
    "old_opset": (old_opset, "uses opset 9"),
    "checker_failure": (unknown_input_name, "the ONNX checker refuses"),
    "sparse_initializer": (sparse_weight, "sparse initializers"),
    "zip": (a_zip, "is a zip archive"),
    "pickle": (a_pickle, "is a Python pickle"),
    "protobuf_garbage": (garbage, "not an ONNX model"),
    "empty_file": (empty_graph, "holds no graph"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_before_any_session(name, tmp_path, monkeypatch, reference):
    build, reason = HOSTILE[name]
    path = tmp_path / f"{name}.onnx"
    made = build(path) if build.__code__.co_argcount else om.save(build(), path)
    assert made is None or made == path
    opened = []
    monkeypatch.setattr(onnx_measure, "session", lambda data: opened.append(1) or pytest.fail("session created"))
    result = onnx_measure.measure(path, name, Bench(OnnxCifarEvaluator(tmp_path), None, 0))
    assert result.problem.startswith("invalid: ") and reason in result.problem, result.problem
    assert "\n" not in result.problem and opened == []


def test_oversized_files_symlinks_and_duplicates_are_refused_unread(tmp_path, data, reference, monkeypatch):
    submissions = tmp_path / "in"
    submissions.mkdir()
    om.save(om.conv_net(channels=16), submissions / "alice.onnx")
    (submissions / "mallory.onnx").symlink_to("/etc/passwd")
    om.save(om.conv_net(), submissions / "bob.onnx")
    om.save(om.colour_classifier(), submissions / "bob__2.onnx")    # a resubmission replaces bob.onnx
    size = (submissions / "alice.onnx").stat().st_size
    monkeypatch.setattr(homework, "ONNX_MAX_BYTES", size - 1)
    run(submissions, tmp_path / "out", data, reference, rounds=0)
    rows = {row["student_id"]: row for row in read_csv(tmp_path / "out" / "leaderboard.csv")}
    assert rows["alice"]["status"] == f"invalid: the file is {size:,} bytes (limit {size - 1:,})"
    assert rows["mallory"]["status"] == "invalid: mallory.onnx must be a regular file"
    assert int(rows["bob"]["bit_ops"]) == 30 * 32 * 32 and rows["bob"]["accuracy"] == "100.00"


def test_the_reference_models_pass_the_checks(tmp_path):
    for model in (om.colour_classifier(), om.conv_net(), om.conv_net(qdq=True)):
        checked = onnxload.check_model(model.SerializeToString())
        assert checked.free_batch and checked.input_name == "images"
    fixed = om.colour_classifier()
    fixed.graph.input[0].CopyFrom(om.image_input(1))
    fixed.graph.output[0].CopyFrom(om.logits_output(1))
    assert not onnxload.check_model(fixed.SerializeToString()).free_batch
    with pytest.raises(SubmissionError, match="limit"):
        onnxload.check_model(b"\0" * (homework.ONNX_MAX_BYTES + 1))


def test_a_fixed_batch_model_is_evaluated_one_image_at_a_time(data):
    model = om.colour_classifier()
    model.graph.input[0].CopyFrom(om.image_input(1))
    model.graph.output[0].CopyFrom(om.logits_output(1))
    checked = onnxload.check_model(model.SerializeToString())
    calls = []
    real = onnx_measure.runner(checked.data, checked.input_name)
    correct, total = OnnxCifarEvaluator(data)(lambda batch: calls.append(len(batch)) or real(batch), False)
    assert (correct, total) == (200, 200) and set(calls) == {1}


def test_latency_ratio_is_a_median_of_interleaved_rounds():
    order = []
    fast = lambda image: order.append("s")     # noqa: E731
    slow = lambda image: order.append("r") or sum(range(20000))  # noqa: E731
    ratio = onnx_measure.latency_ratio(fast, slow, np.zeros((1, 3, 32, 32), np.float32), rounds=3)
    assert 0 < ratio < 1 and math.isfinite(ratio)
    repeats = onnx_measure.LATENCY_REPEATS
    assert order[2:] == ["r"] * repeats + ["s"] * repeats + ["s"] * repeats + ["r"] * repeats + \
        ["r"] * repeats + ["s"] * repeats


def test_the_verb_is_listed_and_merges_are_wired():
    from grader import cli
    assert "onnx-leaderboard" in cli.VERBS and shards.MERGERS["onnx-leaderboard"] == "grader.onnx_leaderboard"
    assert leaderboard.COMPRESSION.kind == "leaderboard" and onnx_leaderboard.BOARD.suffix == homework.ONNX_SUFFIX


# ----------------------------------------------------------------------------- fits UNO (a C header beside the .onnx)


def uno_header(channels=(4, 6, 8)) -> str:
    """The mcu_model.h that the microcontroller track's export writes for a small binary TinyNet."""
    import torch

    from mcu.export import header, integerize
    from mcu.model import TinyNet, to_input
    torch.manual_seed(0)
    model = TinyNet(channels)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.train()
        model(to_input(images))
    return header(integerize(model.eval(), images))


def test_fits_uno_comes_from_the_header_built_and_simulated_never_from_its_text(tmp_path, data, reference):
    from mcu import toolchain
    if not toolchain.avr_available():
        pytest.skip("avr-gcc, avr-size or simavr missing (.ci/run installs gcc-avr avr-libc binutils-avr simavr)")
    submissions = tmp_path / "in"
    submissions.mkdir()
    good = uno_header()
    for sid in ("alice", "bob", "carol", "dave"):
        om.save(om.colour_classifier(), submissions / f"{sid}.onnx")
    (submissions / "alice.h").write_text(good)
    (submissions / "bob.h").write_text('#include "/etc/passwd"\n' + good)  # the preprocessor would read it
    (submissions / "carol.h").symlink_to("/etc/passwd")
    run(submissions, tmp_path / "out", data, reference, rounds=0)
    table = {row["student_id"]: row["fits_uno"] for row in read_csv(tmp_path / "out" / "leaderboard.csv")}
    assert table["alice"].startswith("yes: flash ") and "of 32,256 B, SRAM" in table["alice"]
    assert table["bob"].startswith("invalid header (not compiled): the header is not what mcu/export.py writes")
    assert "root:" not in table["bob"] and table["carol"] == "invalid header: carol.h must be a regular file"
    assert table["dave"] == "n/a"
    assert len(list((tmp_path / "out" / "cache").glob("uno-*.json"))) == 2  # alice's and bob's, by hash
    details = (tmp_path / "out" / "details" / "alice.txt").read_text()
    assert f"fits UNO: {table['alice']}" in details
