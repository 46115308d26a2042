"""The hardware-aware optimiser (solutions/deploy/hardware.py, plans.py, optimiser.py).

The decision logic is tested with injected hardware profiles and injected
measurements (a made-up machine on which each format and structure multiplies
latency, bytes and accuracy by known amounts), so every choice is known in
advance; one small real run on tiny data checks that the command measures,
writes its three files and resumes.
"""
import json
import math
import platform
from pathlib import Path

import pytest

from deploy import optimiser, plans
from deploy.hardware import INT8_ENGINES, HardwareProfile, _cpu_features
from deploy.optimiser import Constraints, broken_constraints, choose, ranking_key
from tests.tinycifar import write_tiny_cifar

from tests.conftest import SOLUTIONS, run_python

X86 = HardwareProfile("x86_64", 2, ("avx2", "fma"), ("x86", "fbgemm", "qnnpack"), 24 << 30, None, True)
ARM_NO_ONNX = HardwareProfile("aarch64", 4, ("asimd", "asimdhp"), ("qnnpack",), 8 << 30, None, False)
BARE = HardwareProfile("riscv64", 1)


def row(name, accuracy, size, ratio, ms=None):
    return {"name": name, "accuracy": accuracy, "bytes": size, "latency_ratio": ratio,
            "latency_ms": 20.0 * ratio if ms is None else ms, "parameters": size // 4, "macs": 0}


REFERENCE = row("reference", 75.0, 80_000_000, 1.0)


# --------------------------------------------------------------------------- the profile


def test_the_detected_profile_describes_this_machine():
    profile = HardwareProfile.detect()
    assert profile.architecture == platform.machine() and profile.cores >= 1
    assert set(profile.int8_engines) <= set(INT8_ENGINES) and profile.memory_bytes > 0
    assert HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    assert profile.architecture in profile.describe()


def test_cpu_features_are_read_from_x86_flags_and_arm_features(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n\nprocessor\t: 1\nflags : avx\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp asimddp\nCPU part\t: 0xd0c\n")
    assert _cpu_features(x86) == ("avx2", "fma", "avx512f", "avx512_vnni")
    assert _cpu_features(arm) == ("asimd", "asimdhp", "asimddp")
    assert _cpu_features(tmp_path / "missing") == ()


@pytest.mark.parametrize("values, message", [
    ({"architecture": "x86_64", "cores": 2, "tpu": "v5"}, "has no tpu"),
    ({"architecture": "x86_64"}, "needs at least 'architecture' and 'cores'"),
    ({"architecture": "x86_64", "cores": 0}, "cores must be a whole number"),
    ({"architecture": "x86_64", "cores": 2, "int8_engines": ["tensorrt"]}, "unknown INT8 engines ['tensorrt']"),
])
def test_a_profile_written_by_hand_is_checked(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        HardwareProfile.from_dict(values)


def test_the_candidate_formats_follow_what_the_machine_can_run():
    assert plans.candidate_formats(X86) == ["float32", "float16", "bfloat16", "int8_dynamic", "int8_static:x86",
                                            "int8_static:fbgemm", "int8_static:qnnpack", "onnx", "onnx_int8"]
    assert plans.candidate_formats(ARM_NO_ONNX) == ["float32", "float16", "bfloat16", "int8_dynamic",
                                                    "int8_static:qnnpack"]
    assert plans.candidate_formats(BARE) == ["float32", "float16", "bfloat16"]


# --------------------------------------------------------------------------- plans


def test_plan_names_round_trip_and_bad_steps_are_refused():
    for text in ("reference", "channels=0.5/0.25+distill=2+onnx_int8", "lowrank=0.9+int8_static:qnnpack"):
        assert plans.plan_name(plans.parse_plan(text)) == text
    for text, message in (("channels=0.5", "two fractions"), ("distill=1.5", "whole epochs"),
                          ("lowrank=2", "one energy"), ("fp8", "unknown number format"),
                          ("onnx:x86", "unknown number format"), ("quantize=8", "unknown step")):
        with pytest.raises(ValueError, match=message):
            plans.parse_plan(text)


# --------------------------------------------------------------------------- the decision


def test_constraints_are_inclusive_and_the_drop_is_from_the_reference():
    limits = Constraints(max_accuracy_drop=3.0, max_bytes=1_000_000, max_latency_ms=2.0)
    assert broken_constraints(row("edge", 72.0, 1_000_000, 0.1, ms=2.0), REFERENCE, limits) == []
    assert broken_constraints(row("over", 71.99, 1_000_001, 0.1, ms=2.01), REFERENCE, limits) == [
        "max_accuracy_drop", "max_bytes", "max_latency_ms"]
    assert broken_constraints(row("better", 80.0, 5, 0.1), REFERENCE, limits) == []
    assert broken_constraints(row("huge", 10.0, 10 ** 12, 50.0), REFERENCE, Constraints(None, None, None)) == []


def test_each_target_ranks_by_its_own_measure_with_the_documented_ties():
    rows = [REFERENCE, row("fast", 70.0, 20_000_000, 0.05), row("tiny", 71.0, 1_000_000, 0.5),
            row("tiny_fast", 72.0, 1_000_000, 0.5), row("sharp", 76.0, 80_000_000, 1.2)]

    def order(target):
        return [r["name"] for r in sorted(rows, key=lambda r: (ranking_key(r, REFERENCE, target), r["name"]))]
    assert order("speed") == ["fast", "tiny_fast", "tiny", "reference", "sharp"]
    assert order("size") == ["tiny_fast", "tiny", "fast", "sharp", "reference"]
    assert order("accuracy") == ["sharp", "reference", "tiny_fast", "tiny", "fast"]
    # balanced: the tiny ones' sqrt(0.5 * 0.0125) = 0.079 beats fast's sqrt(0.05 * 0.25) = 0.112
    assert order("balanced") == ["tiny_fast", "tiny", "fast", "reference", "sharp"]
    assert ranking_key(row("a", 1, 40, 0.25), row("r", 1, 10, 1), "balanced")[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown target 'cheap'"):
        ranking_key(REFERENCE, REFERENCE, "cheap")


def test_balanced_is_a_geometric_mean_not_a_sum():
    lopsided, even = row("lopsided", 74.0, 72_000_000, 0.01), row("even", 74.0, 24_000_000, 0.3)
    # geometric means: sqrt(0.01 * 0.9) = 0.095 < sqrt(0.3 * 0.3) = 0.3; arithmetic ones would pick "even"
    assert choose([REFERENCE, even, lopsided], "balanced", Constraints())["name"] == "lopsided"


def test_choose_keeps_to_the_constraints_and_breaks_ties_by_name():
    rows = [REFERENCE, row("fastest_but_wrong", 60.0, 1000, 0.01), row("b_twin", 74.0, 9000, 0.1),
            row("a_twin", 74.0, 9000, 0.1)]
    assert choose(rows, "speed", Constraints(max_accuracy_drop=3.0))["name"] == "a_twin"
    assert choose([REFERENCE, *rows[:0:-1]], "speed", Constraints(max_accuracy_drop=3.0))["name"] == "a_twin"
    assert choose(rows, "speed", Constraints(max_accuracy_drop=None))["name"] == "fastest_but_wrong"
    assert choose(rows, "speed", Constraints(max_bytes=10)) is None


# --------------------------------------------------------------------------- the search, on a made-up machine

CPU_FACTS = {  # format: (latency factor, bytes factor, accuracy change)
    "float32": (1.0, 1.0, 0.0), "float16": (8.0, 0.5, 0.0), "bfloat16": (3.0, 0.5, -0.1),
    "int8_dynamic": (0.8, 0.35, -0.2), "int8_static:x86": (0.15, 0.25, -1.0), "int8_static:fbgemm": (0.16, 0.25, -1.0),
    "int8_static:qnnpack": (0.9, 0.25, -1.2), "onnx": (0.5, 1.0, 0.0), "onnx_int8": (0.05, 0.25, -1.5)}
STRUCTURES = {"channels=0.5/0.25+distill=2": (0.25, 0.09, -0.8)}


def made_up_machine(facts):
    """``build`` and ``measure`` for a machine whose every number is ``facts`` times the reference's."""
    built = []

    def build(plan):
        built.append(plans.plan_name(plan))
        return plan, None

    def measure(name, plan, path):
        latency, size, accuracy = 1.0, 1.0, REFERENCE["accuracy"]
        fmt = next((step.value for step in plan if step.kind == "format"), "float32")
        structure = plans.plan_name(tuple(step for step in plan if step.kind != "format"))
        for factors in (facts[fmt], STRUCTURES.get(structure, (1.0, 1.0, 0.0))):
            latency, size, accuracy = latency * factors[0], size * factors[1], accuracy + factors[2]
        return row(name, accuracy, int(REFERENCE["bytes"] * size), latency)
    return build, measure, built


def run_search(facts, target, measured=None):
    build, measure, built = made_up_machine(facts)
    rows = optimiser.search(X86, [plans.parse_plan(text) for text in STRUCTURES], target, build, measure,
                            measured, log=lambda line: None)
    return rows, built


def test_a_format_measured_slower_is_not_combined_for_speed_but_is_for_size():
    rows, built = run_search(CPU_FACTS, "speed")
    assert [r["name"] for r in rows[:9]] == ["reference"] + plans.candidate_formats(X86)[1:]
    stage2 = [r["name"] for r in rows if r["stage"] == 2]
    # the latency front of stage 1: onnx_int8, int8_static:x86, onnx (float32 is as accurate as onnx and slower)
    assert stage2 == ["channels=0.5/0.25+distill=2+int8_static:x86", "channels=0.5/0.25+distill=2+onnx",
                      "channels=0.5/0.25+distill=2+onnx_int8"]
    assert built == [r["name"] for r in rows]  # everything measured was built once
    size_stage2 = [r["name"] for r in run_search(CPU_FACTS, "size")[0] if r["stage"] == 2]
    assert "channels=0.5/0.25+distill=2+float16" in size_stage2  # half the bytes, no accuracy lost
    assert "channels=0.5/0.25+distill=2+bfloat16" not in size_stage2  # as small as float16, less accurate


def test_where_half_precision_is_fast_the_optimiser_finds_it_by_measuring():
    fast_fp16 = {**CPU_FACTS, "float16": (0.04, 0.5, 0.0)}
    rows, _ = run_search(fast_fp16, "speed")
    assert "channels=0.5/0.25+distill=2+float16" in [r["name"] for r in rows if r["stage"] == 2]
    result = optimiser.decide(rows, X86, "speed", Constraints())
    assert result["chosen"] == "channels=0.5/0.25+distill=2+float16"
    assert result["chosen_plan"] == [{"kind": "channels", "value": "0.5/0.25"}, {"kind": "distill", "value": "2"},
                                     {"kind": "format", "value": "float16"}]


def test_a_resumed_search_builds_nothing_it_measured_before():
    first, _ = run_search(CPU_FACTS, "balanced")
    again, built = run_search(CPU_FACTS, "balanced", measured={r["name"]: r for r in first})
    assert built == [] and again == first


def test_the_result_names_the_choice_its_reason_and_the_fronts(tmp_path):
    rows, _ = run_search(CPU_FACTS, "balanced")
    result = optimiser.decide(rows, X86, "balanced", Constraints(max_accuracy_drop=2.0))
    drop = REFERENCE["accuracy"] - min(r["accuracy"] for r in rows if r["name"] == result["chosen"])
    assert result["chosen"] == "channels=0.5/0.25+distill=2+int8_static:x86" and drop <= 2.0
    assert "channels=0.5/0.25+distill=2+onnx_int8" in result["reason"]  # refused: 2.3 points lower
    assert "max_accuracy_drop" in result["reason"] and result["pareto_front"]["latency"][0].endswith("onnx_int8")
    nothing = optimiser.decide(rows, X86, "speed", Constraints(max_bytes=1))
    assert nothing["chosen"] is None and nothing["reason"].startswith("No candidate meets the constraints")
    written = optimiser.write(result, tmp_path)
    assert [p.name for p in written] == ["optimiser.json", "optimiser.md", "optimiser.png"]
    assert json.loads(written[0].read_text())["chosen"] == result["chosen"]
    assert f"**Chosen: {result['chosen']}.**" in written[1].read_text() and written[2].stat().st_size > 10_000


def test_auto_proposes_the_least_pruned_plans_that_could_meet_the_limits(alexnet):
    from deploy import report
    whole = {"parameters": report.parameter_count(alexnet), "macs": report.macs(alexnet)}
    stage1 = [{**REFERENCE, **whole, "format": "float32"},
              {**row("int8", 74.0, 20_000_000, 0.2, ms=4.0), **whole, "format": "int8_static:x86"}]

    def proposed(limits, count=2):
        return [plans.plan_name(p) for p in optimiser.propose(alexnet, limits, 1, count)(stage1, ["float32",
                                                                                              "int8_static:x86"])]
    assert proposed(Constraints()) == ["channels=0.75/0.5+distill=1", "channels=0.5/0.5+distill=1"]
    # 0.5/0.25 keeps about a tenth of the parameters, 0.25/0.25 about a twentieth: 2 MB in INT8, 1 MB
    assert proposed(Constraints(max_bytes=2_500_000), count=4) == ["channels=0.5/0.25+distill=1",
                                                                  "channels=0.25/0.25+distill=1"]
    assert proposed(Constraints(max_bytes=1_000)) == []
    assert proposed(Constraints(max_latency_ms=0.01)) == []
    calls = []  # a proposer is called once, with stage 1's rows and useful formats
    build, measure, _ = made_up_machine(CPU_FACTS)
    optimiser.search(X86, lambda rows, useful: calls.append((len(rows), list(useful))) or [], "speed", build, measure,
                     log=lambda line: None)
    assert calls == [(9, ["int8_static:x86", "onnx", "onnx_int8"])]


def test_balanced_uses_the_bytes_ratio_to_the_reference():
    assert math.isclose(ranking_key(row("x", 70, 20_000_000, 0.04), REFERENCE, "balanced")[0], math.sqrt(0.04 / 4))


# --------------------------------------------------------------------------- one small real run


def test_a_small_real_run_measures_writes_and_keeps_what_a_rerun_reuses(tmp_path, alexnet):
    import torch
    data = write_tiny_cifar(tmp_path / "data", n_train=24, n_test=16)
    torch.save(alexnet, tmp_path / "start.ptmodel")
    profile = tmp_path / "profile.json"  # INT8 on x86 only and no ONNX: a short run
    profile.write_text(json.dumps({**X86.to_dict(), "int8_engines": ["x86"], "onnxruntime": False}))
    args = ["-m", "deploy.optimiser", "--data-dir", data, "--model", tmp_path / "start.ptmodel", "--profile", profile,
            "--structures", "channels=0.5/0.5+distill=1", "--latency-rounds", "1", "--batch-size", "8",
            "--out", tmp_path / "out"]
    first = run_python([*args, "--target", "speed"], SOLUTIONS)
    assert first.returncode == 0, first.stderr
    result = json.loads((tmp_path / "out" / "optimiser.json").read_text())
    names = [r["name"] for r in result["candidates"]]
    assert names[:5] == ["reference", "float16", "bfloat16", "int8_dynamic", "int8_static:x86"]
    assert {r["stage"] for r in result["candidates"]} == {1, 2} and result["chosen"] in names
    reference = result["candidates"][0]
    assert reference["latency_ratio"] == 1.0 and reference["images"] == 16
    half = next(r for r in result["candidates"] if r["name"] == "float16")
    assert abs(half["bytes"] - reference["bytes"] / 2) < 0.01 * reference["bytes"]
    assert all(r["parameters"] < reference["parameters"] / 3 for r in result["candidates"] if r["stage"] == 2)
    files = sorted(path.name for path in (tmp_path / "out" / "models").iterdir())
    assert files == sorted(f"{r['name'].replace('/', '_').replace(':', '-')}.pt" for r in result["candidates"])
    assert all(Path(r["file"]).stat().st_size == r["bytes"] for r in result["candidates"])  # each its own file
    saved = optimiser.Resumable(tmp_path / "out" / "measured.jsonl", json.loads(
        (tmp_path / "out" / "measured.jsonl").read_text().splitlines()[0])["settings"])
    assert sorted(saved) == sorted(names)  # a rerun would measure none of them again


def test_measured_rows_resume_only_under_the_same_settings(tmp_path):
    path = tmp_path / "measured.jsonl"
    first = optimiser.Resumable(path, {"seed": 42, "model_sha256": "ab"})
    first["reference"], first["float16"] = REFERENCE, row("float16", 75.0, 40_000_000, 1.6)
    with path.open("a") as file:
        file.write('{"settings": {"seed": 42, "model_sha256": "ab"}, "row": {"na')  # a run stopped mid-line
    again = optimiser.Resumable(path, {"seed": 42, "model_sha256": "ab"})
    assert again == {"reference": REFERENCE, "float16": first["float16"]}
    again["int8"] = row("int8", 74.0, 20_000_000, 0.3)  # written on a line of its own after the cut one
    assert sorted(optimiser.Resumable(path, {"seed": 42, "model_sha256": "ab"})) == ["float16", "int8", "reference"]
    assert optimiser.Resumable(path, {"seed": 42, "model_sha256": "cd"}) == {}  # another model: nothing reused
    assert optimiser.Resumable(tmp_path / "none.jsonl", {}) == {}


def test_the_command_refuses_bad_input_with_a_sentence(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{'architecture'")
    for extra, message in ((["--structures", "fp8"], "unknown number format 'fp8'"),
                           (["--profile", tmp_path / "none.json"], "none.json does not exist"),
                           (["--profile", tmp_path / "broken.json"], "broken.json is not JSON"),
                           (["--profile", tmp_path / "list.json"], "a hardware profile is a JSON object")):
        bad = run_python(["-m", "deploy.optimiser", "--model", tmp_path / "none.ptmodel", *extra], SOLUTIONS)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
