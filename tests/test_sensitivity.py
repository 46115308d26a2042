"""``python -m grader sensitivity``: per-layer prune and bit-width scans with their bytes."""
import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import cli
from grader.reference import reference
from grader.sensitivity import PrefixCache, scan_layers, share_weights, weight_bytes
from net.quantization import share_values
from tests.tinycifar import write_tiny_cifar


def weights(model):
    return {name: m.weight.detach().clone() for name, m in model.prunable_layers()}


def test_each_point_changes_only_its_layer_and_reaches_its_setting(small_model):
    original = weights(small_model)
    seen, layers_named = [], []

    def accuracy(layer):  # records what the model looks like whenever a point is measured
        now = weights(small_model)
        changed = [name for name in now if not torch.equal(now[name], original[name])]
        seen.append({name: now[name] for name in changed})
        layers_named.append(layer)
        return float(len(seen) - 1)  # the call's number, to find it back

    points = scan_layers(small_model, accuracy, baseline=-1.0, sparsities=[0, 50, 90], bits=[1, 3],
                         bytes_bits=3, progress=lambda _: None)
    assert len(points) == 4 * (3 + 2)
    for point in points:
        if point.scan == "prune" and point.setting == 0:
            assert point.subset_accuracy == -1.0, "an unchanged layer is not measured again"
            continue
        state = seen[int(point.subset_accuracy)]
        assert list(state) == [point.layer], f"{point}: other layers changed"
        assert layers_named[int(point.subset_accuracy)] == point.layer
        weight = state[point.layer]
        assert point.nonzeros == int(torch.count_nonzero(weight))
        if point.scan == "prune":
            assert 100.0 * float((weight == 0).float().mean()) == pytest.approx(point.setting, abs=1.0)
        else:
            assert torch.unique(weight[weight != 0]).numel() <= 2 ** int(point.setting)
            assert torch.equal(weight == 0, original[point.layer] == 0)
    assert all(torch.equal(a, b) for a, b in zip(weights(small_model).values(), original.values())), \
        "the scan must leave the model as it found it"


def test_bytes_column_is_what_the_reference_format_writes(small_model):
    layers = dict(small_model.prunable_layers())
    points = scan_layers(small_model, lambda layer: 0.0, baseline=0.0, sparsities=[80], bits=[2], bytes_bits=4,
                         progress=lambda _: None)
    for point in points:
        weight = layers[point.layer].weight.detach().numpy()
        if point.scan == "prune":
            threshold = np.percentile(np.abs(weight), point.setting)
            weight = share_weights(np.where(np.abs(weight) < threshold, 0, weight).astype(np.float32), 4)
        else:
            weight = share_weights(weight, int(point.setting))
        huffman = reference().huffman
        encode = huffman.huffman_encode_conv if weight.ndim == 4 else huffman.huffman_encode_fc
        with tempfile.TemporaryDirectory() as folder:
            encode(weight, point.layer, folder)
            written = sum(f.stat().st_size for f in Path(folder).iterdir())
        assert point.weight_bytes == written == weight_bytes(point.layer, weight)
        assert point.original_bytes == weight.nbytes


def test_prefix_cache_gives_the_outputs_of_the_modified_model(small_model, tmp_path):
    util = reference().util
    data = util.load_cifar10(str(write_tiny_cifar(tmp_path, n_train=5, n_test=30)), train=False, download=False)
    cache = PrefixCache(small_model, data, torch.device("cpu"), batch_size=8)
    images = util.normalize(data.images)
    for name, module in small_model.prunable_layers():
        original = module.weight.detach().clone()
        with torch.no_grad():
            module.weight.mul_(torch.rand_like(module.weight) < 0.5)
            expected = small_model(images)
        assert torch.allclose(cache.logits(name), expected, atol=1e-5)
        with torch.no_grad():
            module.weight.copy_(original)
    assert not any("forward" in vars(m) for _, m in small_model.prunable_layers()), "the layers are restored"


def test_sharing_a_big_layer_fits_on_a_sample_and_assigns_the_nearest_centroid():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(60, 50)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.3] = 0
    exact = share_weights(weight, 3, max_fit=10_000)
    nonzero = weight != 0
    assert np.array_equal(exact[nonzero], share_values(weight[nonzero], 3)), "small layers: the reference exactly"
    sampled = share_weights(weight, 3, max_fit=200)
    assert np.array_equal(sampled == 0, ~nonzero)
    centroids = np.unique(sampled[nonzero])
    assert centroids.size <= 8
    distance = np.abs(weight[nonzero][:, None] - centroids[None, :])
    assert np.allclose(np.abs(weight[nonzero] - sampled[nonzero]), distance.min(axis=1))


def test_command_writes_the_grid_to_csv_and_two_plots(tmp_path, shared_alexnet):
    data = write_tiny_cifar(tmp_path / "data", n_train=10, n_test=40)
    model_path = tmp_path / "model.ptmodel"
    torch.save(shared_alexnet, model_path)
    out = tmp_path / "out"
    status = cli.main(["sensitivity", str(model_path), "--data-dir", str(data), "--out", str(out),
                       "--subset", "20", "--sparsities", "0,99.5", "--bits", "2", "--device", "cpu", "--confirm-each"])
    assert status == 0
    with open(out / "sensitivity.csv") as f:
        rows = list(csv.DictReader(f))
    layers = [name for name, _ in shared_alexnet.prunable_layers()]
    for scan, grid in (("prune", ["0", "99.5"]), ("bits", ["2"])):
        for layer in layers:
            mine = [r for r in rows if r["scan"] == scan and r["layer"] == layer]
            assert [r["setting"] for r in mine] == grid
            assert all(int(r["weight_bytes"]) > 0 and r["subset_accuracy"] for r in mine)
            assert sum(r["chosen"] == "True" for r in mine) <= 1
    assert [r["scan"] for r in rows][0] == "baseline"
    assert {"combined-prune", "combined-bits"} <= {r["scan"] for r in rows}
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert chosen and all(r["full_accuracy"] for r in chosen), "chosen points are confirmed on the full test set"
    for name in ("prune_scan.png", "bits_scan.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_reports_a_missing_model_in_one_line(tmp_path, capsys):
    status = cli.main(["sensitivity", str(tmp_path / "nothing.ptmodel"), "--data-dir", str(tmp_path),
                       "--out", str(tmp_path / "out")])
    assert status == 2
    assert "error" in capsys.readouterr().err
