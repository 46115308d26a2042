"""The leaderboard end to end: measurement, the worker pool, resuming, every output file, the page in a browser.

Accuracies are injected with ``FixedAccuracy`` (no training); the models are
built directly with a few shared values and most weights at zero.
"""
import csv
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from grader import leaderboard, measure, workerpool
from grader.measure import CifarEvaluator, FixedAccuracy
from grader.reference import reference
from tests.tinycifar import write_tiny_cifar

REPO = Path(__file__).resolve().parent.parent


def shared_state(seed: int, keep: float = 0.05, levels: int = 8) -> "OrderedDict[str, torch.Tensor]":
    """A pruned, weight-shared AlexNet state_dict: ``keep`` of each weight non-zero, ``levels`` values per layer."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, tensor in reference().AlexNet().state_dict().items():
        if name.endswith("bias"):
            state[name] = torch.randn(tensor.shape, generator=generator) * 0.01
        else:
            codebook = torch.linspace(-0.1, 0.1, levels)
            index = torch.randint(0, levels, tensor.shape, generator=generator)
            kept = torch.rand(tensor.shape, generator=generator) < keep
            state[name] = torch.where(kept, codebook[index], torch.zeros(()))
    return state


def save_whole(state, path: Path) -> Path:
    """Save as the handout's scripts do: the whole model, pickled as ``net.models.AlexNet``."""
    from net.models import AlexNet
    model = AlexNet()
    model.load_state_dict(state)
    torch.save(model, path)
    return path


@pytest.fixture(scope="module")
def states():
    return {"sparse": shared_state(1, keep=0.02), "dense": shared_state(2, keep=0.2)}


# ----------------------------------------------------------------------------- one submission

def test_measure_uses_the_reference_encoder_and_the_evaluator(tmp_path, states):
    path = save_whole(states["sparse"], tmp_path / "alice.ptmodel")
    result = measure.measure(path, "alice", FixedAccuracy({"alice": 6123}))
    model = reference().AlexNet()
    model.load_state_dict(states["sparse"])
    _, report = measure.encode_decode(model)
    assert result.problem == ""
    assert (result.correct, result.total) == (6123, 10000)
    assert result.compressed_bytes == report.compressed_bytes
    assert result.entry().rate == pytest.approx(81_378_600 / report.compressed_bytes)
    assert "fc2.weight" in result.table and "total" in result.table


def test_negative_zeros_count_as_pruned_weights(tmp_path, states):
    state = OrderedDict((k, v.clone()) for k, v in states["sparse"].items())
    negative = state["fc1.weight"] == 0
    state["fc1.weight"][negative] = -0.0        # what `weight * mask` leaves for negative weights
    assert torch.signbit(state["fc1.weight"]).sum() > int(negative.sum()) // 4
    plain = measure.measure(save_whole(states["sparse"], tmp_path / "a.ptmodel"), "a", FixedAccuracy({}))
    signed = measure.measure(save_whole(state, tmp_path / "b.ptmodel"), "b", FixedAccuracy({}))
    assert signed.problem == "" and signed.compressed_bytes == plain.compressed_bytes


def test_a_model_that_was_never_shared_is_reported(tmp_path, states, monkeypatch):
    monkeypatch.setattr(measure, "MAX_DISTINCT_VALUES", 1000)
    state = OrderedDict(states["dense"], **{"conv2.weight": torch.randn(192, 64, 5, 5)})
    result = measure.measure(save_whole(state, tmp_path / "x.ptmodel"), "x", FixedAccuracy({}))
    assert result.problem.startswith("invalid: conv2.weight has") and "not weight-shared" in result.problem


def test_an_invalid_file_is_a_result_not_an_exception(tmp_path):
    (tmp_path / "x.ptmodel").write_text("not a model")
    result = measure.measure(tmp_path / "x.ptmodel", "x", FixedAccuracy({}))
    assert result.problem.startswith("invalid: not a PyTorch file")
    assert result.entry().rate == 0


def test_cifar_evaluator_is_deterministic_and_normalises_like_the_handout(tmp_path):
    write_tiny_cifar(tmp_path, n_train=10, n_test=60)
    evaluator = CifarEvaluator(tmp_path)
    util = reference().util
    data = util.load_cifar10(str(tmp_path), train=False)
    torch.manual_seed(3)
    model = reference().AlexNet()
    _, accuracy = util.evaluate(model, data, torch.device("cpu"), progress=False)
    first = evaluator(model, "s")
    assert first == evaluator(model, "s") == (round(accuracy * 60 / 100), 60)
    # all weights zero: the logits are fc3's bias, so every image is put in the class of its largest entry
    for p in model.parameters():
        p.data.zero_()
    model.fc3.bias.data[7] = 1.0
    assert evaluator(model, "s") == (int((data.labels == 7).sum()), 60)
    model.fc3.bias.data[2] = 1.0    # an exact tie: float64 decides, argmax takes the first
    assert evaluator(model, "s") == (int((data.labels == 2).sum()), 60)
    assert CifarEvaluator(tmp_path, limit=20)(model, "s")[1] == 20
    assert evaluator.key != CifarEvaluator(tmp_path, limit=20).key


# ----------------------------------------------------------------------------- the worker pool

def test_the_pool_survives_hangs_crashes_and_exceptions():
    # The workers run eval(task, {"x": 2}): stdlib only, so they start quickly.
    results = {}
    sleep, die, fail = "__import__('time').sleep(60)", "__import__('os')._exit(3)", "1 / 0"
    tasks = ["x + 1", sleep, "x + 2", die, fail, "x + 3"]
    started = time.monotonic()
    workerpool.run_tasks(tasks, dict, ({"x": 2},), eval, results.__setitem__, jobs=2, timeout=5)
    assert time.monotonic() - started < 40
    assert (results["x + 1"], results["x + 2"], results["x + 3"]) == (3, 4, 5)
    assert isinstance(results[sleep], workerpool.Failure) and "longer than 5 s" in results[sleep].reason
    assert isinstance(results[die], workerpool.Failure) and "exit code 3" in results[die].reason
    assert results[fail].reason == "ZeroDivisionError: division by zero"


def test_a_worker_that_cannot_start_stops_the_run():
    with pytest.raises(workerpool.SetupError, match="ZeroDivisionError"):
        workerpool.run_tasks(["1"], eval, ("1 / 0",), eval, lambda *a: None, jobs=1)
    with pytest.raises(workerpool.SetupError, match="died while starting"):
        workerpool.run_tasks(["1"], eval, ("__import__('os')._exit(4)",), eval, lambda *a: None, jobs=1)


# ----------------------------------------------------------------------------- the whole command

CLASS = {"alice": 6123, "bob": 7000, "carol": 6123, "dave": 5800, "erin": 9000}


@pytest.fixture(scope="module")
def submissions(tmp_path_factory, states):
    """alice and carol: the same sparse model (a tie), bob a denser one, dave at exactly the gate,
    erin NaN weights, frank a hostile pickle, and two files whose names make the same id."""
    folder = tmp_path_factory.mktemp("submissions")
    save_whole(states["sparse"], folder / "alice.ptmodel")
    torch.save(states["sparse"], folder / "carol.ptmodel")           # a state_dict this time
    save_whole(states["dense"], folder / "bob.ptmodel")
    save_whole(states["dense"], folder / "dave.ptmodel")
    broken = OrderedDict((k, v.clone()) for k, v in states["dense"].items())
    broken["fc1.bias"][0] = float("nan")
    torch.save(broken, folder / "erin.ptmodel")
    (folder / "frank.ptmodel").write_bytes((REPO / "tests" / "test_leaderboard.py").read_bytes()[:100])
    shutil.copy(folder / "alice.ptmodel", folder / "a b.ptmodel")   # both are student "a_b"
    shutil.copy(folder / "alice.ptmodel", folder / "a_b.ptmodel")
    (folder / "notes.txt").write_text("ignored")
    grades = folder.parent / "grades.csv"
    grades.write_text("student_id,prune,quantize,huffman,code_total,status\n"
                      "alice,70,10,10,90,ok\nbob,35,10,0,45,ok\ngrace,70,10,10,90,ok\n")
    return folder, grades


@pytest.fixture
def small_class(tmp_path, submissions):
    """alice, bob and frank only (resuming tests measure them several times)."""
    folder = tmp_path / "small"
    folder.mkdir()
    for student in ("alice", "bob", "frank"):
        shutil.copy(submissions[0] / f"{student}.ptmodel", folder)
    return folder


def test_discover_reads_only_plausible_files(tmp_path, monkeypatch):
    from grader import safeload
    (tmp_path / "ok.ptmodel").write_bytes(b"x" * 10)
    (tmp_path / "twice.ptmodel").write_bytes(b"x")
    (tmp_path / "twice.PTMODEL").write_bytes(b"y")
    (tmp_path / "big.ptmodel").write_bytes(b"x" * 100)
    (tmp_path / "link.ptmodel").symlink_to(tmp_path / "ok.ptmodel")
    os.mkfifo(tmp_path / "fifo.ptmodel")                 # reading it would block forever
    (tmp_path / "=cmd().ptmodel").write_bytes(b"x")
    monkeypatch.setattr(safeload, "MAX_FILE_BYTES", 50)
    found, rejected = leaderboard.discover(tmp_path)
    assert [s.student_id for s in found] == ["cmd_", "ok"]  # the id every command derives from "=cmd()"
    assert rejected["twice"] == "invalid: more than one .ptmodel for this student"
    assert "100 bytes" in rejected["big"]
    assert "regular file" in rejected["link"] and "regular file" in rejected["fifo"]


def record_measurements(monkeypatch):
    """Make ``leaderboard`` measure a file by its zlib-compressed size alone and append the id of every submission
    it measures to the returned list.

    The tests that use it check the cache and resuming; the reference encoder itself (seconds per model) runs in
    test_the_command_writes_every_output and the CLI tests.
    """
    measured = []

    def by_size(submission, evaluator):
        measured.append(submission.student_id)
        data = submission.path.read_bytes()
        if not data.startswith(b"PK"):
            return measure.Measurement(submission.student_id, problem="invalid: not a PyTorch file")
        correct, total = evaluator(None, submission.student_id)
        return measure.Measurement(submission.student_id, correct=correct, total=total,
                                   compressed_bytes=len(zlib.compress(data, 1)))

    monkeypatch.setattr(leaderboard, "_measure_task", by_size)
    return measured


def read_csv(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_command_writes_every_output(tmp_path, submissions):
    folder, grades = submissions
    out = tmp_path / "out"
    rows = leaderboard.run(folder, out, FixedAccuracy(CLASS), gate="58.00", grades=grades, jobs=2,
                           progress=False)
    board = read_csv(out / "leaderboard.csv")
    assert list(board[0]) == ["rank", "student_id", "accuracy", "compression_rate", "compressed_bytes",
                              "qualified", "points", "status"]
    by_id = {row["student_id"]: row for row in board}
    # alice and carol are the same model: a tie at rank 1, both in the top tier; bob (denser) is third
    assert [(r["student_id"], r["rank"], r["points"]) for r in board[:3]] == [
        ("alice", "1", "10"), ("carol", "1", "10"), ("bob", "3", "0")]
    assert by_id["alice"]["compressed_bytes"] == by_id["carol"]["compressed_bytes"]
    assert float(by_id["alice"]["compression_rate"]) > float(by_id["bob"]["compression_rate"])
    assert by_id["alice"]["accuracy"] == "61.23" and by_id["alice"]["qualified"] == "yes"
    assert by_id["dave"]["qualified"] == "no" and by_id["dave"]["status"].startswith("below the gate")
    assert by_id["erin"]["status"] == "invalid: fc1.bias contains NaN or Inf values"
    assert by_id["frank"]["status"].startswith("invalid: not a PyTorch file")
    assert by_id["grace"]["status"] == "missing: no .ptmodel submitted"
    assert by_id["a_b"]["status"] == "invalid: more than one .ptmodel for this student"
    assert all(by_id[s]["points"] == "0" and by_id[s]["rank"] == "" for s in
               ("dave", "erin", "frank", "grace", "a_b"))
    assert len(rows) == len(board) == 8

    final = {row["student_id"]: row for row in read_csv(out / "final_grades.csv")}
    assert list(next(iter(final.values()))) == ["student_id", "prune", "quantize", "huffman", "ranking",
                                                "deploy_total", "total"]
    assert final["alice"] == {"student_id": "alice", "prune": "70", "quantize": "10", "huffman": "10",
                              "ranking": "10", "deploy_total": "0", "total": "100"}
    assert final["bob"]["total"] == "45" and final["grace"]["total"] == "90"     # grace: code only
    assert final["carol"]["total"] == "10"                                       # carol: ranking only

    markdown = (out / "leaderboard.md").read_text()
    assert "| 1 | alice |" in markdown and "## Not ranked" in markdown and "a_b" in markdown
    page = (out / "leaderboard.html").read_text()
    assert "<svg" in page and "alice" in page and "below the gate" in page
    for forbidden in ("<script", "http://", "https://", "<link", "src="):
        assert forbidden not in page.replace("http://www.w3.org", "")
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    details = (out / "details" / "alice.txt").read_text()
    assert "rank: 1 of 3 ranked" in details and "fc2.weight" in details and "total" in details
    assert "missing" in (out / "details" / "grace.txt").read_text()
    assert "NaN" in (out / "details" / "erin.txt").read_text()
    assert sorted(p.name for p in (out / "cache").iterdir()) == sorted(
        f"{s}.json" for s in ("alice", "bob", "carol", "dave", "erin", "frank"))
    assert not list(out.rglob("*.tmp"))


def test_a_rerun_measures_only_new_or_changed_files(tmp_path, small_class, monkeypatch, states):
    work, out = small_class, tmp_path / "out"
    evaluator = FixedAccuracy(CLASS)
    measured = record_measurements(monkeypatch)
    leaderboard.run(work, out, evaluator, jobs=0, progress=False)
    first = (out / "leaderboard.csv").read_text()
    assert sorted(measured) == ["alice", "bob", "frank"]
    leaderboard.run(work, out, evaluator, jobs=0, progress=False)
    assert len(measured) == 3 and (out / "leaderboard.csv").read_text() == first

    save_whole(states["dense"], work / "alice.ptmodel")                    # alice resubmits
    leaderboard.run(work, out, evaluator, jobs=0, progress=False)
    assert measured[3:] == ["alice"]
    # another evaluation (data, method, reference code or version) is another cache key
    submission = leaderboard.discover(work)[0][0]
    assert leaderboard.ResultCache(out / "cache", measure.measure_key(evaluator)).get(submission) is not None
    other = FixedAccuracy({**CLASS, "bob": 1})
    assert leaderboard.ResultCache(out / "cache", measure.measure_key(other)).get(submission) is None


def test_a_killed_run_keeps_what_it_finished(tmp_path, small_class, monkeypatch):
    folder, out = small_class, tmp_path / "out"
    real_put = leaderboard.ResultCache.put
    saved = []

    def put_then_die(self, submission, measurement):
        if len(saved) == 1:
            raise KeyboardInterrupt
        real_put(self, submission, measurement)
        saved.append(submission.student_id)

    record_measurements(monkeypatch)
    monkeypatch.setattr(leaderboard.ResultCache, "put", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        leaderboard.run(folder, out, FixedAccuracy(CLASS), jobs=0, progress=False)
    monkeypatch.undo()
    assert len(list((out / "cache").glob("*.json"))) == 1 and not list(out.rglob("*.tmp"))

    measured = record_measurements(monkeypatch)
    leaderboard.run(folder, out, FixedAccuracy(CLASS), jobs=0, progress=False)
    assert len(measured) == 2 and not set(measured) & set(saved)
    board = read_csv(out / "leaderboard.csv")
    assert [(r["student_id"], r["rank"]) for r in board] == [("alice", "1"), ("bob", "2"), ("frank", "")]


# ----------------------------------------------------------------------------- the CLI on tiny data, in a browser

def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_cli_rejects_bad_options(tmp_path):
    result = run_cli("leaderboard", tmp_path, "--out", tmp_path / "o", "--gate", "high")
    assert result.returncode == 2 and "--gate must be a number" in result.stderr
    result = run_cli("leaderboard", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.returncode == 2 and "is not a folder" in result.stderr


@pytest.fixture(scope="module")
def published(tmp_path_factory, states):
    """The real command on a tiny CIFAR-10, as a TA runs it."""
    root = tmp_path_factory.mktemp("cli")
    write_tiny_cifar(root / "data", n_train=10, n_test=40)
    subs = root / "subs"
    subs.mkdir()
    save_whole(states["sparse"], subs / "108062345.ptmodel")
    save_whole(states["dense"], subs / "108062346.ptmodel")
    (subs / "108062347.ptmodel").write_text("oops")
    result = run_cli("leaderboard", subs, "--out", root / "out", "--data-dir", root / "data", "--gate", "0",
                     "--jobs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "leaderboard: " in result.stdout
    return root / "out"


def test_the_cli_publishes_with_the_real_evaluator(published):
    board = read_csv(published / "leaderboard.csv")
    assert [row["student_id"] for row in board] == ["108062345", "108062346", "108062347"]
    assert all(row["accuracy"] != "" for row in board[:2]) and board[2]["qualified"] == "no"
    assert "/40 test images" in (published / "details" / "108062345.txt").read_text()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (.ci/run installs it)")
def test_the_page_renders_in_a_headless_browser(published, tmp_path):
    from matplotlib.image import imread
    import numpy as np
    shot = tmp_path / "page.png"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
               (published / "leaderboard.html").resolve().as_uri()]
    subprocess.run(command, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100                                   # text, a plot: not a blank page
    green = np.array([0x1a, 0x98, 0x50]) / 255                  # the top tier's colour, in plot and table
    assert (np.abs(pixels - green).max(axis=-1) < 0.02).sum() > 50
    assert (pixels.mean(axis=-1) < 0.3).mean() > 0.005          # dark text
    keep = os.environ.get("LEADERBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


# ----------------------------------------------------------------------------- the demo's building blocks

def test_the_demo_class_is_built_from_this_repository():
    from grader import demo
    from grader.homework import STUDENT_ID
    students = demo.demo_class()
    assert [s.student_id for s in students[:2]] == ["demo-reference", "demo-skeleton"]
    assert len(students) == 2 + len(demo.CLASS_BUGS) and all(STUDENT_ID.fullmatch(s.student_id) for s in students)
    assert [s.variant for s in students[2:]] == list(demo.CLASS_BUGS)
    assert not students[1].shares_weights and students[1].code == REPO / "assignment"
    assert [s.deploy for s in students] == [True, True, False, False, True]  # Part 2: graded for three
    assert [s.deploy_variant for s in students] == [None] * 4 + [demo.DEPLOY_BUG]
    from grader import variants
    assert demo.DEPLOY_BUG in variants.deploy_names()
    assert demo.demo_gate(25.35) == "20.00" and demo.demo_gate(12.0) == "10.00"


def test_a_demo_workspace_holds_the_students_code_and_its_zip_what_the_grader_needs(tmp_path):
    import zipfile
    from grader import demo, variants
    buggy = next(s for s in demo.demo_class() if s.deploy_variant)
    space = demo.make_workspace(buggy, tmp_path / "space")
    for name in (buggy.variant, buggy.deploy_variant):
        for relative, text in variants.variant_files(name).items():
            assert (space / relative).read_text() == text
    assert (space / "net" / "models.py").read_bytes() == (REPO / "solutions" / "net" / "models.py").read_bytes()
    assert not (space / "staff").exists() and not (space / "saves").exists()
    archive = demo.package(space, buggy.student_id, tmp_path / "subs", buggy.deploy)
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == sorted(demo.HANDED_IN + demo.DEPLOY_HANDED_IN)
    with zipfile.ZipFile(demo.package(space, "p1", tmp_path / "subs")) as zipped:  # Part 1 only
        assert sorted(zipped.namelist()) == sorted(demo.HANDED_IN)


@pytest.mark.heavy
def test_the_demo_trains_prunes_and_shares_with_the_students_code_on_tiny_data(tmp_path):
    from grader import demo
    write_tiny_cifar(tmp_path / "data", n_train=40, n_test=10)
    recipe = demo.Recipe(train_images=40, initial_epochs=1, retrain_images=20,
                         prune_rates=tuple((layer, 99.0) for layer in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                                      "fc1", "fc2", "fc3")))
    reference_student = demo.demo_class()[0]
    space = demo.make_workspace(reference_student, tmp_path / "ref")
    initial = tmp_path / "initial.ptmodel"
    assert demo.run_driver(space, tmp_path / "data", initial, recipe, share=False).returncode == 0, \
        (space / "demo.log").read_text()[-2000:]
    shared = tmp_path / "ref.ptmodel"
    assert demo.run_driver(space, tmp_path / "data", shared, recipe, start=initial).returncode == 0, \
        (space / "demo.log").read_text()[-2000:]
    result = measure.measure(shared, "ref", FixedAccuracy({}))
    assert result.problem == "" and result.entry().rate > 20          # pruned at 99%: a high rate
