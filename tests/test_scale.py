"""Past one machine (grader/shards.py): a class graded and ranked in shards, as separate processes, then merged,
gives byte for byte what one machine gives; a shard killed midway is finished by running it again; merge refuses
shards that do not fit together. The cluster recipes in deploy/cluster/ are checked too.

The class: the solutions, the skeleton, two buggy variants, a resubmission, a hostile submission that forges
results into the output folders, and a roster student who hands in nothing; then a handful of .ptmodels measured
on a tiny CIFAR-10.
"""
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grader import grade, shards, variants
from tests.test_archives import make_zip
from tests.test_grade import ISOLATION, student_files, write_tree
from tests.test_leaderboard import shared_state
from tests.tinycifar import write_tiny_cifar


pytestmark = pytest.mark.heavy
REPO = Path(__file__).resolve().parent.parent
N = 3
PINNED = [0, 1, 5, 4]
"""shard_of(id, 8) of alice, bob, carol, Li_Wei: int(sha256(id)) mod 8."""
OPTIONS = ["--no-progress", "--isolation", ISOLATION]
ROSTER = "id,name\nalice,A\nbob,B\ncarol,C\ndave,D\nerin,E\nfrank,F\ngina,G\n"
SUBMITTED = ("alice", "bob", "carol", "dave", "frank", "gina")
FORGE = """
import os as _os
for _p in {targets!r}:
    try:
        _os.makedirs(_os.path.dirname(_p), exist_ok=True)
        open(_p, "w").write('{{"kind": "grade", "shard": 0, "of": 1, "score": 90}}')
    except Exception:
        pass
_os._exit(0)
"""


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, **kwargs)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "grader", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def outputs(out: Path, internal=("shards", "cache")) -> dict:
    """Every file under ``out`` but the shard markers and the leaderboard's cache (it records seconds taken)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in internal}


def refused(result: subprocess.CompletedProcess, message: str) -> bool:
    return result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded on one machine and in N shards (one of them killed once and run again)."""
    root = tmp_path_factory.mktemp("scale")
    submissions, single, sharded = root / "class", root / "single", root / "sharded"
    submissions.mkdir()
    solutions, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    make_zip(submissions / "alice.zip", solutions)
    write_tree(submissions / "bob", skeleton)
    make_zip(submissions / "carol.zip", skeleton)
    make_zip(submissions / "carol__2.zip", solutions)
    for sid, name in (("dave", variants.names()[0]), ("gina", variants.names()[-1])):
        make_zip(submissions / f"{sid}.zip", {**solutions, **{f: t.encode() for f, t in
                                                             variants.variant_files(name).items()}})
    targets = [str(out / part) for out in (single, sharded)
               for part in ("results/alice.json", "grades.csv", "shards/0-of-1.json")]
    make_zip(submissions / "frank.zip", {f: data + FORGE.format(targets=targets).encode()
                                         for f, data in solutions.items()})
    (root / "roster.csv").write_text(ROSTER)
    common = ["--roster", str(root / "roster.csv"), *OPTIONS]
    counts = {k: [sid for sid in SUBMITTED if shards.shard_of(sid, N) == k] for k in range(N)}
    killed = max(counts, key=lambda k: len(counts[k]))
    first = min(counts, key=lambda k: len(counts[k]))
    one = start("grade", str(submissions), "--out", str(single), "--jobs", "1", *common)
    done = start("grade", str(submissions), "--out", str(sharded), "--shard", f"{first}/{N}", "--jobs", "1", *common)
    assert (one.wait(timeout=900), done.wait(timeout=900)) == (0, 0)
    run = start("grade", str(submissions), "--out", str(sharded), "--shard", f"{killed}/{N}", "--jobs", "1", *common)
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline and \
                not any((sharded / "results" / f"{sid}.json").exists() for sid in counts[killed]):
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    midway = {"done": [sid for sid in counts[killed] if (sharded / "results" / f"{sid}.json").exists()],
              "marker": (sharded / "shards" / f"{killed}-of-{N}.json").exists(),
              "merge": cli("merge", str(sharded)), "grades": (sharded / "grades.csv").exists()}
    runs = [start("grade", str(submissions), "--out", str(sharded), "--shard", f"{k}/{N}", "--jobs", "1", *common)
            for k in range(N) if k != first]
    assert [r.wait(timeout=900) for r in runs] == [0] * (N - 1)
    merged = cli("merge", str(sharded))
    return {"root": root, "class": submissions, "single": single, "sharded": sharded, "killed": killed, "first": first,
            "counts": counts, "midway": midway, "merged": merged, "common": common}


def test_shards_merged_are_byte_identical_to_one_machine(graded):
    assert graded["merged"].returncode == 0, graded["merged"].stderr
    single, sharded = outputs(graded["single"]), outputs(graded["sharded"])
    assert sorted(single) == sorted(sharded)
    assert {"grades.csv", "roster-check.txt", "results/erin.json", "feedback/frank.md"} <= set(single)
    assert [name for name in single if single[name] != sharded[name]] == []
    rows = {row["student_id"]: row for row in csv.DictReader(io.StringIO((graded["single"] / "grades.csv").read_text()))}
    assert [rows[sid]["code_total"] for sid in ("alice", "carol", "erin", "frank")] == ["90", "90", "0", "0"]
    assert rows["alice"]["status"] == "ok" and rows["erin"]["status"].startswith("missing")
    # frank's forged results went nowhere: its box sees no output folder
    assert sorted(p.name for p in (graded["sharded"] / "shards").iterdir()) == [f"{k}-of-{N}.json" for k in range(N)]
    assert [p.name for p in (graded["single"] / "shards").iterdir()] == ["0-of-1.json"]


def test_a_killed_shard_has_no_marker_merge_waits_and_a_rerun_finishes_it(graded):
    midway, killed = graded["midway"], graded["killed"]
    assert 1 <= len(midway["done"]) < len(graded["counts"][killed]) and not midway["marker"]
    assert refused(midway["merge"], f"{N - 1} of its {N} shards have not finished")
    assert f"{killed}/{N}" in midway["merge"].stderr and f"{graded['first']}/{N}" not in midway["merge"].stderr
    assert not midway["grades"]  # nothing class-wide was written from a part of the class
    marker = json.loads((graded["sharded"] / "shards" / f"{killed}-of-{N}.json").read_text())
    assert set(graded["counts"][killed]) <= set(marker["students"])


def test_a_shard_of_another_grader_version_is_refused(graded, tmp_path):
    out = tmp_path / "sharded"
    shutil.copytree(graded["sharded"], out)
    before = outputs(out)
    again = cli("grade", str(graded["class"]), "--out", str(out), "--shard", f"{graded['first']}/{N}", "--jobs", "2",
                *graded["common"], "--test-timeout", "59")  # another limit: another grader version
    assert again.returncode == 0, again.stderr
    assert (out / "grades.csv").read_bytes() == before["grades.csv"]  # a shard writes nothing class-wide
    result = cli("merge", str(out))
    assert refused(result, "different grader versions") and "run the shards" in result.stderr
    assert (out / "grades.csv").read_bytes() == before["grades.csv"]


# --------------------------------------------------------------------------- the leaderboard


@pytest.fixture(scope="module")
def ranked(graded, tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    data, models = write_tiny_cifar(root / "data", n_train=5, n_test=40), root / "models"
    models.mkdir()
    for seed, sid in enumerate(("alice", "carol", "carol__2"), 1):
        torch.save(shared_state(seed, keep=0.01), models / f"{sid}.ptmodel")
    shutil.copy(models / "alice.ptmodel", models / "dave.ptmodel")  # a tie
    (models / "frank.ptmodel").write_bytes(b"not a model")
    (root / "key").write_text("ab" * 32)
    common = ["--data-dir", str(data), "--grades", str(graded["single"] / "grades.csv"), "--gate", "0",
              "--jobs", "0", "--pseudonyms", "--pseudonym-key", str(root / "key")]
    one = cli("leaderboard", str(models), "--out", str(root / "single"), *common)
    assert one.returncode == 0, one.stderr
    parts = [start("leaderboard", str(models), "--out", str(root / "sharded"), "--shard", f"{k}/2", *common)
             for k in range(2)]
    assert [part.wait(timeout=900) for part in parts] == [0, 0]
    assert not (root / "sharded" / "leaderboard.csv").exists()
    return root, cli("merge", str(root / "sharded"))


def test_leaderboard_shards_merged_are_byte_identical_to_one_machine(ranked):
    root, merged = ranked
    assert merged.returncode == 0, merged.stderr
    single, sharded = outputs(root / "single"), outputs(root / "sharded")
    assert {"leaderboard.csv", "leaderboard.html", "leaderboard.png", "final_grades.csv", "public/leaderboard.csv",
            "details/alice.txt"} <= set(single)
    assert sorted(single) == sorted(sharded) and [n for n in single if single[n] != sharded[n]] == []
    board = (root / "single" / "leaderboard.csv").read_text()
    assert "frank" in board and "invalid" in board and "erin" in board and "missing" in board
    assert sum(line.split(",")[0] != "" for line in board.splitlines()[1:]) >= 3  # ranked rows


# --------------------------------------------------------------------------- markers that do not fit


def marker(out: Path, k: int, n: int, students=(), version="v1", settings=None) -> None:
    shards.finish(out, "grade", (k, n), version, settings or {"isolation": "bwrap"},
                  {sid: {"sha256": "x"} for sid in students})


def ids(k: int, n: int, count: int = 2) -> list:
    return [sid for sid in (f"s{i}" for i in range(200)) if shards.shard_of(sid, n) == k][:count]


@pytest.mark.parametrize("case, message", [
    ("none", "holds no shard markers"),
    ("two_ns", "different numbers of shards (N=2: shards 0, 1; N=3: shards 0)"),
    ("versions", "different grader versions"),
    ("settings", "other settings"),
    ("overlap", "done by two shards"),
    ("wrong_shard", "belongs to shard"),
    ("damaged", "damaged"),
])
def test_merge_refuses_shards_that_do_not_fit(tmp_path, case, message):
    out = tmp_path / "out"
    out.mkdir()
    if case != "none":
        marker(out, 0, 2, ids(0, 2))
        marker(out, 1, 2, ids(1, 2), version="v2" if case == "versions" else "v1",
               settings={"isolation": "basic"} if case == "settings" else None)
    if case == "two_ns":
        marker(out, 0, 3, ids(0, 3))
    if case == "overlap":
        marker(out, 1, 2, ids(1, 2) + ids(0, 2, 1))
    if case == "wrong_shard":
        marker(out, 1, 2, ids(1, 2) + ids(0, 2, 3)[2:])
    if case == "damaged":
        (out / "shards" / "1-of-2.json").write_text("{")
    with pytest.raises(shards.ShardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        shards.merge(out)
    assert not (out / "grades.csv").exists()


def test_shard_options_are_checked():
    assert shards.parse("3/8") == (3, 8) and shards.parse(" 0 / 1 ") == (0, 1)
    for bad in ("8/8", "1", "-1/4", "a/b", "0/0"):
        with pytest.raises(shards.ShardError, match="K"):
            shards.parse(bad)
    with pytest.raises(grade.GradingError, match="shard must be"):
        grade.grade(REPO, REPO / "never", shard=(2, 2))
    result = cli("grade", str(REPO), "--out", "/nonexistent", "--shard", "4/4")
    assert result.returncode == 2 and "N must be between" in result.stderr and "Traceback" not in result.stderr


def test_the_shard_rule_is_pinned_and_spreads_the_class():
    """The rule is part of the on-disk format (machines of one run must agree): pinned values, even spread."""
    assert [shards.shard_of(sid, 8) for sid in ("alice", "bob", "carol", "Li_Wei")] == PINNED
    sizes = [0] * 64
    for i in range(2000):
        sizes[shards.shard_of(f"student{i:04d}", 64)] += 1
    assert min(sizes) > 10 and max(sizes) < 60  # about 31 each: no shard is left empty or doubled


# --------------------------------------------------------------------------- the cluster recipes (deploy/cluster/)

RECIPES = REPO / "deploy" / "cluster"


def fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
    (folder / name).chmod(0o755)


def test_slurm_scripts_are_bash_and_submit_an_array_then_a_dependent_merge(tmp_path):
    scripts = sorted((RECIPES / "slurm").iterdir())
    assert {p.name for p in scripts} == {"submit.sh", "shard.sbatch", "merge.sbatch"}
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script.name
    bin_ = tmp_path / "bin"
    fake_tool(bin_, "sbatch", f'echo "$@" >> {tmp_path}/sbatch.log; echo "$((4000 + $(wc -l < {tmp_path}/sbatch.log)));cluster"')
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(RECIPES / "slurm" / "submit.sh"), "grade", str(tmp_path), str(tmp_path / "out"),
                           "8", "--roster", "r.csv"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shard_call, merge_call = (tmp_path / "sbatch.log").read_text().splitlines()
    assert "--array=0-7" in shard_call and "N=8" in shard_call and "KIND=grade" in shard_call
    assert shard_call.endswith("shard.sbatch --roster r.csv")
    assert "--dependency=afterok:4001 " in merge_call and merge_call.endswith("merge.sbatch")
    # one array task: shard SLURM_ARRAY_TASK_ID of N, the TA's options passed on
    fake_tool(bin_, "python", 'echo "$@"')
    task = subprocess.run(["bash", str(RECIPES / "slurm" / "shard.sbatch"), "--roster", "r.csv"], capture_output=True,
                          text=True, timeout=60, env={**env, "GRADER_REPO": str(REPO), "GRADER_PYTHON": str(bin_ / "python"),
                                                      "KIND": "grade", "SUBMISSIONS": "/s", "OUT": "/o", "N": "8",
                                                      "SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "2"})
    assert task.stdout.split() == ["-m", "grader", "grade", "/s", "--out", "/o", "--shard", "3/8", "--jobs", "2",
                                   "--no-progress", "--roster", "r.csv"]
    merged = subprocess.run(["bash", str(RECIPES / "slurm" / "merge.sbatch")], capture_output=True, text=True,
                            timeout=60, env={**env, "GRADER_REPO": str(REPO), "GRADER_PYTHON": str(bin_ / "python"),
                                             "OUT": "/o"})
    assert merged.stdout.split() == ["-m", "grader", "merge", "/o"]
    assert subprocess.run(["bash", str(RECIPES / "slurm" / "shard.sbatch")], capture_output=True,
                          env=env).returncode != 0  # outside an array job: refused, nothing run


def load_yaml(text: str) -> list:
    """The documents of a YAML file: PyYAML's reading where it is installed, else :func:`tiny_yaml`."""
    try:
        import yaml
    except ImportError:
        return tiny_yaml(text)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def tiny_yaml(text: str) -> list:
    """The block-style subset of YAML the manifests use (mappings, lists, JSON-style flow values and plain
    scalars); ``ValueError`` for anything else, so a manifest outside the subset fails the test."""
    import re
    docs = []
    for chunk in re.split(r"^---\s*$", text, flags=re.M):
        lines = [[len(line) - len(line.lstrip(" ")), line.strip()] for line in chunk.splitlines()
                 if line.strip() and not line.strip().startswith("#")]
        if lines:
            value, end = _node(lines, 0)
            if end != len(lines):
                raise ValueError(f"unexpected indentation at {lines[end][1]!r}")
            docs.append(value)
    return docs


def _scalar(text: str):
    import re
    if text[:1] in "[{\"":
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else text


def _node(lines: list, i: int):
    import re
    indent = lines[i][0]
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            lines[i] = [indent + 2, lines[i][1][2:]]
            if re.match(r"^[A-Za-z0-9_.-]+:(\s|$)", lines[i][1]):
                item, i = _node(lines, i)
            else:
                item, i = _scalar(lines[i][1]), i + 1
            items.append(item)
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
        match = re.match(r"^([A-Za-z0-9_.-]+):(?:\s+(.*))?$", lines[i][1])
        if not match:
            raise ValueError(f"not a key: value line: {lines[i][1]!r}")
        i += 1
        if match[2]:
            mapping[match[1]] = _scalar(match[2])
        elif i < len(lines) and (lines[i][0] > indent or lines[i][1].startswith("- ")):
            mapping[match[1]], i = _node(lines, i)
        else:
            mapping[match[1]] = None
    return mapping, i


def test_tiny_yaml_reads_what_pyyaml_reads():
    text = "a: 1\nb:\n  - name: x\n    v: [\"p\", \"q\"]\n  - plain\nc:\n  d: true\n---\ne: \"s: t\"\n"
    assert tiny_yaml(text) == [{"a": 1, "b": [{"name": "x", "v": ["p", "q"]}, "plain"], "c": {"d": True}},
                               {"e": "s: t"}]
    with pytest.raises(ValueError):
        tiny_yaml("a: 1\n  b: 2\n")


def test_kubernetes_indexed_job_then_merge_job(tmp_path):
    (shards_job,) = load_yaml((RECIPES / "kubernetes" / "shards.yaml").read_text())
    (merge_job,) = load_yaml((RECIPES / "kubernetes" / "merge.yaml").read_text())
    for job in (shards_job, merge_job):
        assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and len(pod["containers"]) == 1
        container = pod["containers"][0]
        assert container["image"] and container["command"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        (mount,) = container["volumeMounts"]
        (volume,) = pod["volumes"]
        assert mount["name"] == volume["name"] and volume["persistentVolumeClaim"]["claimName"] == "grader-class"
    spec = shards_job["spec"]
    command = spec["template"]["spec"]["containers"][0]["command"][-1]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 8
    assert '--shard "$JOB_COMPLETION_INDEX/8"' in command and "--out /class/graded" in command
    assert merge_job["spec"]["template"]["spec"]["containers"][0]["command"] == \
        ["python", "-m", "grader", "merge", "/class/graded"]
    # run.sh: N shards everywhere in the applied Job, waits for it, then applies the merge Job
    bin_ = tmp_path / "bin"
    fake_tool(bin_, "kubectl", f'echo "$@" >> {tmp_path}/calls; [ "$1 $2" = "apply -f" ] && cat > {tmp_path}/applied-$(wc -l < {tmp_path}/calls).yaml; true')
    done = subprocess.run(["bash", str(RECIPES / "kubernetes" / "run.sh"), "5", "registry/grader:1"], capture_output=True,
                          text=True, timeout=60, env={"PATH": f"{bin_}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["apply", "wait", "apply", "wait", "logs"]
    assert "job/grader-shards" in calls[1] and "condition=complete" in calls[1]
    (applied,) = load_yaml((tmp_path / "applied-1.yaml").read_text())
    assert applied["spec"]["completions"] == applied["spec"]["parallelism"] == 5
    container = applied["spec"]["template"]["spec"]["containers"][0]
    assert '"$JOB_COMPLETION_INDEX/5"' in container["command"][-1] and container["image"] == "registry/grader:1"
    (merge_applied,) = load_yaml((tmp_path / "applied-3.yaml").read_text())
    assert merge_applied["kind"] == "Job" and merge_applied["metadata"]["name"] == "grader-merge"
