"""Pruning: ``_prune``, ``prune_by_std`` and ``prune_by_percentile`` of net/prune.py (50 of the 70 prune points).

Each TODO is graded on its own: the tests of ``prune_by_std`` and
``prune_by_percentile`` give the model a correct ``_prune``, so a mistake in
``_prune`` costs only the points of ``_prune``.
"""
import pytest

from grader.homework import CONV_LAYERS, FC_LAYERS, LAYERS
from grader.suites.common import fail_if, keep_band, pruning_problems, snapshot, std_band, unchanged_problems
from grader.worker.models import small_alexnet

pytestmark = pytest.mark.part("prune")

PRUNE = "net/prune.py: _prune"
STD = "net/prune.py: prune_by_std"
PERCENTILE = "net/prune.py: prune_by_percentile"
BIASES = [f"{name}.bias" for name in LAYERS]


def layer_problems(after, before, layers, band, rule=""):
    """Problems of the weights of ``layers``, each judged against ``band(weight before pruning)``."""
    problems = []
    for name in layers:
        weight = before[f"{name}.weight"]
        problems += pruning_problems(name, weight, after[f"{name}.weight"], *band(weight), rule=rule)
    return problems


# ---------------------------------------------------------------------------
# _prune
# ---------------------------------------------------------------------------

@pytest.mark.points(6, todo=PRUNE)
def test_prune_zeroes_small_weights(student):
    """_prune zeroes the weights whose absolute value is below the threshold, in conv and fc layers, and keeps the others."""
    before = weights = snapshot(small_alexnet())
    problems = []
    for name in ("conv2", "fc1", "conv3", "fc3"):
        threshold = float(weights[f"{name}.weight"].abs().median()) * 1.01  # between two weights
        weights = student.prune(weights, "_prune", name, threshold)
        problems += pruning_problems(name, before[f"{name}.weight"], weights[f"{name}.weight"], threshold)
    fail_if(problems, "model._prune(layer, threshold) did not prune as expected:")


@pytest.mark.points(4, todo=PRUNE)
def test_prune_keeps_weights_equal_to_threshold(student):
    """_prune keeps weights whose absolute value equals the threshold exactly (only |w| < threshold goes)."""
    weights = snapshot(small_alexnet(seed=1))
    problems = []
    for name in ("conv1", "fc2"):
        flat = weights[f"{name}.weight"].view(-1)
        threshold = float(flat.abs().median())
        flat[0], flat[1] = threshold, -threshold  # two weights exactly at the threshold, one of each sign
        before = weights[f"{name}.weight"].clone()
        weights = student.prune(weights, "_prune", name, threshold)
        after = weights[f"{name}.weight"].reshape(-1)
        if after[0] == 0 or after[1] == 0:
            problems.append(f"{name}: the weights {threshold:.6g} and {-threshold:.6g} were set to 0 by "
                            f"_prune(threshold={threshold:.6g}); they are not below the threshold, so they stay")
        problems += pruning_problems(name, before, weights[f"{name}.weight"], threshold)
    fail_if(problems, "Weights exactly at the threshold must be kept:")


@pytest.mark.points(5, todo=PRUNE)
def test_prune_changes_only_the_weight(student):
    """_prune writes into the layer's own weight (same shape and dtype) and never touches the bias."""
    weights = snapshot(small_alexnet(seed=2))
    problems = []
    for name in ("conv4", "fc2"):
        weights[f"{name}.bias"] = weights[f"{name}.bias"] * 0.001  # every bias value is below the threshold
        before = {n: w.clone() for n, w in weights.items()}
        threshold = float(weights[f"{name}.weight"].abs().median()) * 1.01
        weights = student.prune(weights, "_prune", name, threshold)
        problems += pruning_problems(name, before[f"{name}.weight"], weights[f"{name}.weight"], threshold)
        problems += unchanged_problems([f"{name}.bias"], before, weights, "the bias must never be pruned")
        others = [n for n in before if not n.startswith(name + ".")]
        problems += unchanged_problems(others, before, weights, f"_prune was called on {name} only")
    fail_if(problems, "_prune must change the weights of the layer it is given and nothing else:")


# ---------------------------------------------------------------------------
# prune_by_std and prune_by_percentile
# ---------------------------------------------------------------------------

def pruned(student, seed, method, *args):
    """The weights of a fresh small model (seed ``seed``) after ``method(*args)``, with a correct ``_prune``.

    A correct ``_prune`` means these tests grade only the threshold and the layers.
    """
    before = snapshot(small_alexnet(seed=seed))
    return before, student.prune(before, method, *args, correct_prune=True)


def check_std(student, layers, s, seed, *args):
    """Prune a fresh small model with ``prune_by_std(*args)`` and check ``layers`` at ``s`` times their own std."""
    before, after = pruned(student, seed, "prune_by_std", *args)
    rule = f" (= {s} x the std of this layer's weights)"
    problems = layer_problems(after, before, layers, lambda w: std_band(w, s), rule)
    problems += unchanged_problems(BIASES, before, after, "biases are never pruned")
    return problems


@pytest.mark.points(5, todo=STD)
def test_std_prunes_conv_layers(student):
    """prune_by_std(s) prunes every conv layer with threshold s * std of that layer's weights."""
    problems = check_std(student, CONV_LAYERS, 0.5, 3, 0.5)
    fail_if(problems, "After model.prune_by_std(0.5), the conv layers are not pruned as expected:")


@pytest.mark.points(5, todo=STD)
def test_std_prunes_fc_layers(student):
    """prune_by_std(s) prunes every fc layer with threshold s * std of that layer's weights."""
    problems = check_std(student, FC_LAYERS, 0.5, 4, 0.5)
    fail_if(problems, "After model.prune_by_std(0.5), the fc layers are not pruned as expected:")


@pytest.mark.points(5, todo=STD)
def test_std_default_sensitivity(student):
    """prune_by_std() with its default s = 0.25 prunes all eight layers, each with its own std, and no bias."""
    problems = check_std(student, list(LAYERS), 0.25, 5)
    fail_if(problems, "After model.prune_by_std() (s = 0.25), the model is not pruned as expected:")


def check_percentile(student, keep, seed, args, layers=None):
    """Prune a fresh small model with ``prune_by_percentile(*args)``: the layers in ``keep`` keep that percentage, the others everything.

    The handout's rule: ``q`` is the percentage of weights kept, the
    threshold the ``(100 - q)``-th percentile of the layer's ``|W|``. Only
    the weights of ``layers`` (default: all of ``keep``) and the layers
    missing from ``keep`` are checked.
    """
    before, after = pruned(student, seed, "prune_by_percentile", *args)
    problems = []
    for name in layers or keep:
        q = keep[name]
        problems += layer_problems(after, before, [name], lambda w: keep_band(w, q),
                                   f" (q = {q:g} keeps {q:g}%: the {100 - q:g}th percentile of this layer's "
                                   "|weights|)")
    untouched = [n for n in before if n.endswith(".bias") or n.split(".")[0] not in keep]
    problems += unchanged_problems(untouched, before, after, "only the weights of the layers being pruned may change")
    return problems


@pytest.mark.points(5, todo=PERCENTILE)
def test_percentile_prunes_conv_layers(student):
    """prune_by_percentile(q) keeps the q% largest-magnitude weights of every conv layer, layer by layer."""
    problems = check_percentile(student, dict.fromkeys(LAYERS, 30.0), 6, [30.0], CONV_LAYERS)
    fail_if(problems, "After model.prune_by_percentile(30), the conv layers are not pruned as expected "
                      "(q is the percentage kept: about 30% of each layer should stay non-zero, 70% become 0):")


@pytest.mark.points(5, todo=PERCENTILE)
def test_percentile_prunes_fc_layers(student):
    """prune_by_percentile(q) keeps the q% largest-magnitude weights of every fc layer, layer by layer."""
    problems = check_percentile(student, dict.fromkeys(LAYERS, 80.0), 7, [80.0], FC_LAYERS)
    fail_if(problems, "After model.prune_by_percentile(80), the fc layers are not pruned as expected "
                      "(q is the percentage kept: about 80% of each layer should stay non-zero, 20% become 0):")


@pytest.mark.points(5, todo=PERCENTILE)
def test_percentile_default_rate(student):
    """prune_by_percentile() keeps DEFAULT_PRUNE_RATE percent of all eight layers and never prunes a bias."""
    q = student.constant("net.prune", "DEFAULT_PRUNE_RATE")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 100:
        raise AssertionError(f"net/prune.py: DEFAULT_PRUNE_RATE must be a number from 0 to 100, not {q!r}")
    q = float(q)
    problems = check_percentile(student, dict.fromkeys(LAYERS, q), 8, [])
    fail_if(problems, f"After model.prune_by_percentile() (DEFAULT_PRUNE_RATE = {q:g}: keep {q:g}% of each "
                      "layer), the model is not pruned as expected:")


@pytest.mark.points(5, todo=PERCENTILE)
def test_percentile_per_layer_rates(student):
    """prune_by_percentile({layer: q, ...}) keeps its own percentage of each listed layer and leaves the others alone."""
    rates = {"conv2": 35.0, "conv5": 90.0, "fc1": 10.0}
    problems = check_percentile(student, rates, 9, [dict(rates)])
    fail_if(problems, f"After model.prune_by_percentile({rates}), the model is not pruned as expected:")
