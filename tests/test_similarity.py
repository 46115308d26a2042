"""The similarity check (grader/similarity.py): copied code and models are flagged, the handout is not.

alice hands in the solutions, bob the same code with a variable renamed and
other comments, packed differently (copied); carol the skeleton with her own
``_prune`` (independent); dave the untouched skeleton; and ``evil.zip``
climbs out of its folder. alice and bob send the same ``.ptmodel`` file,
carol the same weights saved as a state_dict, dave other weights.
"""
import io
import tarfile
from pathlib import Path

import pytest
import torch

from grader import similarity
from tests.test_archives import make_zip
from tests.test_grade import student_files, write_tree
from tests.test_leaderboard import save_whole, shared_state

REPO = Path(__file__).resolve().parent.parent
OWN_PRUNE = """        flat = module.weight.data.view(-1)
        for position in range(flat.numel()):
            if abs(float(flat[position])) < threshold:
                flat[position] = 0.0
        print("pruned", module, "below", threshold, "in place")
"""


def independent(skeleton: dict) -> dict:
    """The skeleton with carol's own ``_prune`` in place of its first stub."""
    text = skeleton["net/prune.py"].decode()
    stub = "        pass\n"
    assert stub in text
    return {**skeleton, "net/prune.py": text.replace(stub, OWN_PRUNE, 1).encode()}


def copied(solutions: dict) -> dict:
    """The solutions with a variable of the solution's code renamed and a comment added: what copying usually
    looks like."""
    handout = set((REPO / "assignment" / "net" / "prune.py").read_text().splitlines())
    lines = [line if line.rstrip("\n") in handout else line.replace("weights", "ww")
             for line in solutions["net/prune.py"].decode().splitlines(keepends=True)]
    return {**solutions, "net/prune.py": ("# my own work\n" + "".join(lines)).encode()}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("similarity")
    folder = root / "submissions"
    folder.mkdir()
    solutions, skeleton = student_files(REPO / "solutions"), student_files(REPO / "assignment")
    make_zip(folder / "alice.zip", solutions)
    with tarfile.open(folder / "bob.tar.gz", "w:gz") as tf:
        for name, data in copied(solutions).items():
            info = tarfile.TarInfo(f"bob-hw/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    write_tree(folder / "carol", independent(skeleton))
    make_zip(folder / "dave.zip", skeleton)
    make_zip(folder / "evil.zip", {**solutions, "../../escaped.py": b"print('out')\n"})
    state = shared_state(3)
    save_whole(state, folder / "alice.ptmodel")
    (folder / "bob.ptmodel").write_bytes((folder / "alice.ptmodel").read_bytes())
    torch.save(state, folder / "carol.ptmodel")
    save_whole(shared_state(4), folder / "dave.ptmodel")
    out = root / "report"
    assert similarity.main([str(folder), "--out", str(out)]) == 0
    return root, out


def test_identical_models_by_file_and_by_weights(report):
    _, out = report
    text = (out / "similarity.md").read_text()
    assert "- the same file (SHA-256): alice, bob" in text
    assert "- different files, the same decoded weights: alice, bob, carol" in text
    assert "dave" not in text.split("## Code")[0]


def test_copied_code_is_flagged_and_the_handout_and_independent_work_are_not(report):
    root, out = report
    rows = [line for line in (out / "similarity.csv").read_text().splitlines() if line.startswith("code,")]
    pairs = {tuple(row.split(",")[1].split()) for row in rows}
    assert ("alice", "bob") in pairs
    assert all("carol" not in pair and "dave" not in pair for pair in pairs), rows
    assert any(row.split(",")[2] == "net/prune.py" for row in rows if "alice bob" in row)
    page = (out / "code-report.html").read_text()
    assert "alice" in page and "bob" in page
    # the handout's lines are gone from what was compared; dave (the skeleton alone) has nothing left
    assert not (out / "code" / "dave").exists()
    carol = (out / "code" / "carol" / "net" / "prune.py").read_text()
    assert "flat[position] = 0.0" in carol and "def _prune" not in carol


def test_hostile_archives_are_refused_and_listed(report):
    root, out = report
    assert "- evil: not unpacked: " in (out / "similarity.md").read_text()
    assert not list(root.rglob("escaped.py")) and not (root.parent / "escaped.py").exists()
    assert not (out / "code" / "evil").exists()


def test_skeleton_lines_are_stripped():
    handout = {"def f(x):", "pass", "return x"}
    assert similarity.strip_handout("def f(x):\n    pass\n    y = x + 1\n    return x\n", handout) == "    y = x + 1\n"
    assert similarity.strip_handout("def f(x):\n\n    pass\n", handout) == ""


def test_bad_input_is_explained(tmp_path, capsys):
    assert similarity.main([str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert similarity.main([str(tmp_path), "--out", str(tmp_path / "r"), "--skeleton", str(tmp_path)]) == 2
    assert "holds no Python files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        similarity.main([str(tmp_path), "--out", str(tmp_path / "r"), "--threshold", "5"])
    assert "--threshold must be" in capsys.readouterr().err
