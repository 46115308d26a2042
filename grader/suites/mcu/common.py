"""What the microcontroller suites share: the judge's small binary networks, as request arrays, and comparisons."""
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from grader.homework import MCU_IN_CHANNELS, MCU_RESOLUTION


def images(seed: int, count: int) -> torch.Tensor:
    """``count`` random uint8 images of the track's input size (what the board reads)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, MCU_IN_CHANNELS, MCU_RESOLUTION, MCU_RESOLUTION), dtype=torch.uint8,
                         generator=generator)


def network(reference, channels: Sequence[int], seed: int, gains=(0.5, 1.5), calibrate: bool = True):
    """A binary reference ``TinyNet`` with random weights, BatchNorm gains drawn from ``gains`` and, with
    ``calibrate``, running statistics from three passes over random images; in eval mode."""
    model_module = reference("mcu/model.py")
    torch.manual_seed(seed)
    model = model_module.TinyNet(list(channels))
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.uniform_(*gains)
        if calibrate:
            model.train()
            x = model_module.to_input(images(seed, 48))
            for _ in range(3):
                model(x)
    return model.eval()


def state_arrays(model: torch.nn.Module) -> Dict[str, np.ndarray]:
    """The model's whole state (weights and BatchNorm statistics) as the request arrays ``state:<name>``."""
    return {f"state:{name}": value.detach().numpy().copy() for name, value in model.state_dict().items()}


def weights(shape, spread: float, seed: int) -> np.ndarray:
    """float32 weights drawn uniformly from ``[-spread, spread]``."""
    return np.random.default_rng(seed).uniform(-spread, spread, shape).astype(np.float32)


def close(value, expected: np.ndarray, what: str) -> Optional[str]:
    """What is wrong with ``value`` as ``expected`` (``what`` names it), or None when they agree."""
    value = np.asarray(value)
    if value.shape != expected.shape:
        return f"{what} has shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
    if value.dtype.kind not in "biuf" or not np.all(np.isfinite(value)):
        return f"{what} must be finite numbers"
    if not np.allclose(value.astype(np.float64), expected, rtol=1e-5, atol=1e-6):
        worst = int(np.argmax(np.abs(value.astype(np.float64) - expected)))
        return (f"{what} is wrong: at flat index {worst} it is {value.ravel()[worst]:.6g}, expected "
                f"{expected.ravel()[worst]:.6g}")
    return None
