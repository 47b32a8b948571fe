"""The training step of a run as one object (``Workload``): its model, a sample batch of its
shape, its loss, and the name under which its execution choice is remembered. The scripts
time it to choose their execution (``execution.choose``); the benchmark and the profiler
measure the same objects, so that their steps and names cannot drift from the scripts'."""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from medimg.classification_models import MODELS as CLASSIFIERS
from medimg.classification_models import NUM_CLASSES, Scores, build_classifier
from medimg.execution import Execution
from medimg.execution import from_args as execution_from_args
from medimg.segmentation_models import build_model
from medimg.training import step_maker
from utils import DiceCELoss


@dataclass(frozen=True)
class Workload:
    """One training step: ``model`` by the scripts' name (mlp, mobilenet, unet, unet_noskip,
    smp_unet with ``encoder``) on a batch of ``batch_size`` RGB images of ``side`` x ``side``
    pixels; ``probabilities`` puts a classifier's loss on its softmax output (the template's
    literal MobileNet, ``--loss_on_probabilities``); ``base_channels``: the UNets' first level."""
    model: str
    batch_size: int
    side: int
    encoder: str = "resnet18"
    probabilities: bool = False
    base_channels: int = 64

    @classmethod
    def of_segmentation(cls, args, side: int) -> "Workload":
        """``main_segmentation.py``'s step: its model on ``args.batch_size`` crops (or images) of ``side`` pixels."""
        return cls(args.model, args.batch_size, side, args.encoder, base_channels=args.base_channels)

    @classmethod
    def of_classification(cls, args) -> "Workload":
        """``main_classification.py``'s step."""
        return cls(args.model, args.batch_size, args.size, probabilities=args.loss_on_probabilities)

    @property
    def classifies(self) -> bool:
        return self.model in CLASSIFIERS

    @property
    def name(self) -> str:
        """What the execution choice is remembered under, e.g. ``unet batch 8 128x128``
        (``unet base 16 batch 8 128x128`` for a UNet of 16 base channels)."""
        model = self.model + (f"/{self.encoder}" if self.model == "smp_unet" else "") + \
            (f" base {self.base_channels}" if self.base_channels != 64 else "")
        return f"{model} batch {self.batch_size} {self.side}x{self.side}"

    def build(self) -> nn.Module:
        """A fresh network with random weights (weights do not change a step's time)."""
        if self.classifies:
            return build_classifier(self.model, self.side)
        return build_model(self.model, self.encoder, "none", self.base_channels)[0]

    def loss(self) -> nn.Module:
        return nn.CrossEntropyLoss() if self.classifies else DiceCELoss()

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the loss sees: a classifier's scores (``Scores``), a segmenter's logits."""
        return Scores(model, self.probabilities) if self.classifies else model

    def sample(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of this shape: images in [0, 1], class labels or sparse vessel-like masks."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.rand(self.batch_size, 3, self.side, self.side, generator=generator)
        if self.classifies:
            return x, torch.randint(0, NUM_CLASSES, (self.batch_size,), generator=generator)
        return x, (torch.rand(self.batch_size, 1, self.side, self.side, generator=generator) > 0.9).float()

    def step_maker(self, model: Optional[nn.Module] = None, compiled: bool = False
                   ) -> Callable[[Execution], Callable[[], object]]:
        """``make_step(execution)`` (``training.step_maker``): one training step of a copy of
        ``model`` (a fresh one when None) on ``sample()``; ``compiled`` runs it under
        ``torch.compile`` (the benchmark's extra variants)."""
        wrap = (lambda net: torch.compile(self.wrap(net))) if compiled else self.wrap
        x, y = self.sample()
        return step_maker(self.build() if model is None else model, x, y, self.loss(), wrap=wrap)


def for_segmentation(args, device: torch.device, model: nn.Module, side: int) -> tuple[Execution, dict]:
    """The run's execution for this model and training batch (``args.batch_size`` images of
    ``side`` pixels), as ``execution.from_args`` chooses it, and the record of the choice."""
    workload = Workload.of_segmentation(args, side)
    return execution_from_args(args, device, workload.name, workload.step_maker(model))


def for_classification(args, device: torch.device, model: nn.Module) -> tuple[Execution, dict]:
    """The run's execution for this model and batch shape (``execution.from_args``)."""
    workload = Workload.of_classification(args)
    return execution_from_args(args, device, workload.name, workload.step_maker(model))
