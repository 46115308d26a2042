"""The AlexNet that this homework compresses.

Only the eight weight layers own parameters (``conv1`` ... ``fc3``): ReLU,
max-pooling and dropout are applied as functions in ``forward``. A pickled
model or a ``state_dict`` therefore holds exactly 16 tensors, which is what
the grader's loader expects.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .prune import PruningModule

NUM_CLASSES = 10


class AlexNet(PruningModule):
    """AlexNet for 32x32 RGB images (CIFAR-10), 20,344,650 parameters."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(256, 4096)
        self.fc2 = nn.Linear(4096, 4096)
        self.fc3 = nn.Linear(4096, num_classes)
        self.dropout = dropout
        self._initialize()

    def _initialize(self) -> None:
        """He (Kaiming) initialisation for ReLU layers, zero biases.

        Without batch normalisation, PyTorch's default initialisation shrinks
        the signal in each of the eight layers and this network barely trains.
        """
        for _, module in self.prunable_layers():
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 32x32 -> 8x8 -> 4x4
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # 4x4 -> 2x2
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 2)   # 2x2 -> 1x1
        x = torch.flatten(x, 1)
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, self.dropout, self.training)
        x = F.relu(self.fc2(x))
        return self.fc3(x)
