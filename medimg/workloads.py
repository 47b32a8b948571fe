"""The training step each script times to choose its execution (``execution.choose``):
the run's model, a sample batch of its shape, its loss, and the workload's name under
which the choice is remembered."""
import torch
from torch import nn

from medimg.classification_models import NUM_CLASSES, Scores
from medimg.execution import from_args as execution_from_args
from medimg.training import step_maker
from utils import DiceCELoss


def for_segmentation(args, device, model, side):
    """The fastest execution for this model and training batch (``args.batch_size`` images
    of ``side`` pixels), as ``execution.choose`` measures it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 3, side, side, generator=generator)
    y = (torch.rand(args.batch_size, 1, side, side, generator=generator) > 0.9).float()
    name = args.model + (f"/{args.encoder}" if args.model == "smp_unet" else "")
    return execution_from_args(args, device, f"{name} batch {args.batch_size} {side}x{side}",
                               step_maker(model, x, y, DiceCELoss()))


def for_classification(args, device, model):
    """The fastest execution for this model and batch shape (``execution.choose``)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 3, args.size, args.size, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)
    make_step = step_maker(model, x, y, nn.CrossEntropyLoss(), wrap=lambda m: Scores(m, args.loss_on_probabilities))
    return execution_from_args(args, device, f"{args.model} batch {args.batch_size} {args.size}x{args.size}", make_step)
