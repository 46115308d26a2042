"""Graph capture (solutions/deploy/capture.py) on the small AlexNet: torch.export with a free batch, exact check."""
import pytest
import torch

from deploy import capture
from grader.worker.models import small_alexnet


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    model = small_alexnet(seed=3, trainable=True).eval()
    return model, [torch.randn(n, 3, 32, 32, generator=generator) for n in (4, 16, 1)]


def test_the_captured_graph_runs_any_batch_and_is_exactly_the_model(setup):
    model, inputs = setup
    program = capture.capture(model, inputs[0])
    assert isinstance(program, torch.export.ExportedProgram)
    assert set(program.state_dict) == {name for name, _ in model.named_parameters()}
    graph = program.module()
    assert [graph(x).shape[0] for x in inputs] == [4, 16, 1]
    assert capture.check_equivalent(model, graph, inputs) == {"equal": True, "max_abs_diff": 0.0}


def test_a_changed_graph_is_not_equal_however_small_the_change(setup):
    model, inputs = setup
    changed = small_alexnet(seed=3, trainable=True).eval()
    with torch.no_grad():
        changed.fc3.bias[0] += 1e-6  # within any allclose tolerance
    graph = capture.capture(changed, inputs[0]).module()
    check = capture.check_equivalent(model, graph, inputs)
    assert check["equal"] is False and 0.0 < check["max_abs_diff"] < 1e-5
    assert all(torch.allclose(model(x), graph(x)) for x in inputs)


def test_an_example_of_one_image_cannot_leave_the_batch_free(setup):
    model, inputs = setup
    with pytest.raises(Exception, match="batch"):
        capture.capture(model, inputs[2])
