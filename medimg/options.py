"""The command-line arguments of the two training scripts, in one place because the
experiment planner (``medimg.preflight``) parses a run's arguments exactly as its script
will. The defaults are the assignment's."""
from argparse import Namespace
from typing import Optional, Sequence

from medimg.classification_models import MODELS as CLASSIFIERS
from medimg.cli import (
    ArgumentParser,
    add_execution_options,
    add_training_options,
    fraction,
    multiple_of_16,
    non_negative_int,
    positive_int,
)
from medimg.retina import STRATEGIES
from medimg.segmentation_models import ENCODERS
from medimg.segmentation_models import MODELS as SEGMENTERS


def parse_segmentation_args(argv: Optional[Sequence[str]] = None) -> Namespace:
    """``main_segmentation.py``'s arguments: the template's, then Problem 4's variants, the data
    and budget options, and the execution."""
    parser = ArgumentParser(description='Retina blood vessel segmentation training script')
    template = add_training_options(parser, batch_size=2, epochs=40, lr=1e-4)
    template.add_argument('--dataset', type=str, required=True,
                          help='Path to the dataset (the Data folder containing train and test folders)')

    variants = parser.add_argument_group("Problem 4's variants")
    variants.add_argument('--model', choices=SEGMENTERS, default='unet',
                          help='unet (graded), unet_noskip (4.1) or smp_unet, the UNet of '
                               'segmentation-models-pytorch (4.4) (default: %(default)s).')
    variants.add_argument('--encoder', choices=ENCODERS, default='resnet18',
                          help="smp_unet only: the encoder. resnet18 is the assignment's (its ImageNet weights come "
                               "from a model hub); efficientnet-lite0's ship with pip (default: %(default)s).")
    variants.add_argument('--encoder_weights', default='imagenet',
                          help="smp_unet only: 'imagenet', 'none' (from scratch) or the path of a state dict of the "
                               "encoder's ImageNet classifier (default: %(default)s).")
    variants.add_argument('--base_channels', type=positive_int, default=64,
                          help="unet and unet_noskip only: the first level's channels, doubled at each level below "
                               "(default: %(default)s, the graded UNet's; a smaller one checks the plumbing in seconds).")
    variants.add_argument('--optimizer', choices=('adamw', 'adam'), default='adamw',
                          help='adam ignores --weight_decay (default: %(default)s).')
    variants.add_argument('--lr_schedule', choices=('constant', 'cosine'), default='constant',
                          help="constant (the template's) or cosine decay to zero over the epochs "
                               "(default: %(default)s).")
    variants.add_argument('--augmentation', choices=list(STRATEGIES), default='none',
                          help='Training-time augmentation strategy (default: %(default)s).')
    variants.add_argument('--show_augmentations', type=non_negative_int, default=0, metavar='N',
                          help='Write augmentations.png with N examples of every strategy.')

    data = parser.add_argument_group('data and budget (CPU-sized runs, model selection)')
    data.add_argument('--crop_size', type=multiple_of_16, default=0,
                      help='Train on random square crops of this size (a multiple of 16); 0 = whole images. '
                           'Evaluation always uses whole images (default: %(default)s).')
    data.add_argument('--crops_per_image', type=positive_int, default=1,
                      help='With --crop_size: crops drawn from each training image per epoch (default: %(default)s).')
    data.add_argument('--image_size', type=multiple_of_16, default=0,
                      help='Resize every image to this square size (a multiple of 16); 0 = keep '
                           '(default: %(default)s).')
    data.add_argument('--val_fraction', type=fraction(low_open=False, high_open=True), default=0.0,
                      help='Hold out this fraction of the training eyes (all copies of one eye together) for '
                           'validation and model selection; 0 = validate on the test set as the template does.')
    data.add_argument('--train_fraction', type=fraction(low_open=True, high_open=False), default=1.0,
                      help='Train on this fraction of the training eyes (whole eyes, chosen with the seed), '
                           'e.g. 0.25 to see what pretraining brings with little data (default: %(default)s).')
    data.add_argument('--eval_every', type=positive_int, default=1, help='Evaluate every N epochs (default: %(default)s).')
    data.add_argument('--final_weights', choices=('best', 'last'), default='best',
                      help="With --val_fraction: the weights the test images measure, those of the best evaluation "
                           "on the held-out eyes (best) or of the last epoch (last, a fixed budget for every arm of a "
                           "comparison). Without it always the last (default: %(default)s).")
    data.add_argument('--train_eval', choices=('every', 'never'), default='every',
                      help="every: each evaluation also measures one copy of every training eye on whole images, "
                           "as the evaluation images are (results.json's train_whole_* curves); never: skip it, "
                           "for runs whose figures do not use those curves (default: %(default)s).")

    machinery = add_execution_options(parser)
    machinery.add_argument('--threads', type=non_negative_int, default=0,
                           help='CPU threads for PyTorch; 0 = its default.')
    machinery.add_argument('--save_model', action='store_true', help='Keep the final weights as model.pt.')
    args = parser.parse_args(argv)
    if args.model == 'smp_unet' and args.base_channels != 64:
        parser.error(f'--base_channels {args.base_channels}: only unet and unet_noskip have it, not smp_unet')
    return args


def parse_classification_args(argv: Optional[Sequence[str]] = None) -> Namespace:
    """``main_classification.py``'s arguments: the template's, the data, the execution."""
    parser = ArgumentParser(description="PathMNIST classification: MLP or MobileNet")
    template = add_training_options(parser, batch_size=128, epochs=15, lr=1e-3)
    template.add_argument("--model", choices=CLASSIFIERS, default="mlp", help="which model to train (default: %(default)s)")

    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", type=str, default="data", help="the medmnist root (default: %(default)s)")
    data.add_argument("--size", type=int, choices=[28, 64, 128, 224], default=28,
                      help="MedMNIST+ image size (default: %(default)s)")
    data.add_argument("--subset", type=non_negative_int, default=0, metavar="N",
                      help="use at most N samples of each split (smoke runs, CPU experiments); 0 = all")
    data.add_argument("--loss_on_probabilities", action="store_true",
                      help="the template's literal behaviour: cross-entropy on MobileNet's softmax output")

    machinery = add_execution_options(parser)
    machinery.add_argument("--num_workers", type=non_negative_int, default=None,
                           help="data-loading processes (default: CPU cores - 1)")
    return parser.parse_args(argv)
