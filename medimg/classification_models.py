"""The networks of Problem 2.6 and the one place that decides what the loss sees.

``MobileNet.forward`` ends in the softmax of Table 1; ``nn.CrossEntropyLoss`` applies its
own log-softmax, so training feeds it the pre-softmax scores (``Scores``) unless the
template's literal behaviour (cross-entropy on probabilities) is asked for."""
import torch
from torch import nn

from mlp import MLP
from mobileNet import MobileNet

NUM_CLASSES = 9
MODELS = ("mlp", "mobilenet")


def build_classifier(name: str, image_size: int = 28) -> nn.Module:
    """The MLP of Problem 1 (on flattened ``[B, 3, S, S]`` images) or MobileNet, for the 9
    PathMNIST classes."""
    if name == "mlp":
        return MLP(3 * image_size * image_size, [1024, 512, 64, 64], NUM_CLASSES, activation="relu")
    return MobileNet(NUM_CLASSES)


class Scores(nn.Module):
    """What the loss sees: the pre-softmax scores, or with ``probabilities`` (the
    template's literal behaviour for MobileNet) the softmax output."""

    def __init__(self, model: nn.Module, probabilities: bool = False):
        super().__init__()
        self.model, self.probabilities = model, probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, S, S]`` -> scores ``[B, 9]``."""
        if isinstance(self.model, MobileNet):
            return self.model(x) if self.probabilities else self.model.forward_logits(x)
        logits = self.model(x)
        return torch.softmax(logits, dim=1) if self.probabilities else logits

    def to_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class probabilities from what ``forward`` returned."""
        return scores if self.probabilities else torch.softmax(scores, dim=1)
