"""The homework's facts have one home (grader/homework.py): they match the code, and changing one is one edit.

The "one edit" tests copy the grader package, change one line of the copy's
homework.py, and check in a fresh interpreter that every reader follows.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

from grader import homework
from grader.reference import original_bytes, reference

REPO = Path(__file__).resolve().parent.parent


def test_the_layers_are_the_reference_models_weight_layers():
    model = reference().AlexNet()
    assert tuple(name for name, _ in model.prunable_layers()) == homework.LAYERS
    assert homework.CONV_LAYERS + homework.FC_LAYERS == homework.LAYERS


def test_the_original_size_is_computed_from_the_reference_model():
    assert original_bytes() == 4 * sum(p.numel() for p in reference().AlexNet().parameters()) == 81_378_600


def test_every_todo_names_a_student_file_and_parts_add_up():
    for part in homework.PARTS:
        assert part.todos and all(todo.split(": ")[0] in homework.STUDENT_FILES for todo in part.todos)
    assert homework.CODE_POINTS == sum(homework.PART_POINTS.values()) == 90
    assert not set(homework.STUDENT_FILES) & set(homework.PROVIDED_FILES)


def test_student_ids_are_the_same_for_every_command():
    assert homework.student_id("Li Wei") == "Li_Wei"
    assert homework.student_id("=cmd()") == "cmd_"
    assert homework.student_id("../../etc") == "etc"
    assert homework.student_id("") == "_" and len(homework.student_id("x" * 300)) == 64
    assert all(homework.STUDENT_ID.fullmatch(homework.student_id(s)) for s in ("a b", "ü", "-x", "a/b", "1.2"))


def changed_copy(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the repository's grader and solutions with one line of homework.py changed."""
    root = tmp_path / "repo"
    for folder in ("grader", "solutions"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    facts = root / "grader" / "homework.py"
    text = facts.read_text()
    assert text.count(old) == 1, old
    facts.write_text(text.replace(old, new))
    return root


def ask(root: Path, code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_moving_the_gate_is_one_edit(tmp_path):
    root = changed_copy(tmp_path, 'GATE = "58.00"', 'GATE = "60.00"')
    seen = ask(root, """if True:
        import inspect, json
        from grader import demo, leaderboard, publish, ranking
        from grader.ranking import Entry, rank_entries
        rows = rank_entries([Entry("a", 5950, 10000, 1000), Entry("b", 6050, 10000, 1000)])
        source = inspect.getsource(demo)
        print(json.dumps({"run": inspect.signature(leaderboard.run).parameters["gate"].default,
                          "ranked": [r.entry.student_id for r in rows if r.qualified],
                          "demo_reads_it": "homework.GATE" in source and "58" not in source}))
    """)
    assert seen == {"run": "60.00", "ranked": ["b"], "demo_reads_it": True}


def test_adding_a_student_file_is_one_edit(tmp_path):
    root = changed_copy(tmp_path, '"net/huffmancoding.py", "pruning.py")',
                        '"net/huffmancoding.py", "pruning.py", "net/extra.py")')
    seen = ask(root, """if True:
        import json, pathlib, tempfile
        from grader import archives, demo
        from grader.suites.submission import assemble
        work = pathlib.Path(tempfile.mkdtemp())
        (work / "sub/net").mkdir(parents=True)
        for name in ("prune.py", "extra.py"):
            (work / "sub/net" / name).write_text("x = 1\\n")
        staged = archives.prepare(work / "sub", work / "prepared")
        missing = assemble(staged, pathlib.Path("solutions"), work / "box")
        print(json.dumps({"handed_in": "net/extra.py" in demo.HANDED_IN, "staged": (staged / "net/extra.py").is_file(),
                          "boxed": (work / "box/net/extra.py").is_file(), "missing": missing}))
    """)
    assert seen == {"handed_in": True, "staged": True, "boxed": True,
                    "missing": ["net/quantization.py", "net/huffmancoding.py", "pruning.py"]}


def test_a_ninth_layer_reaches_the_suites_models_in_one_edit(tmp_path):
    root = changed_copy(tmp_path, '"conv5", "fc1"', '"conv5", "conv6", "fc1"')
    seen = ask(root, """if True:
        import json, torch
        from grader.worker.models import small_alexnet
        model = small_alexnet()
        print(json.dumps({"layers": [n for n, _ in model.named_children()],
                          "output": list(model(torch.zeros(2, 3, 32, 32)).shape)}))
    """)
    assert seen == {"layers": ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2", "fc3"],
                    "output": [2, 10]}
