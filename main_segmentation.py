"""
Problems 3 and 4: retina blood-vessel segmentation with a UNet.

Trains on ``DATASET/train/{image,mask}`` and evaluates on ``DATASET/test/{image,mask}``
(or on a validation split of the training fundi, ``--val_fraction``), with the
assignment's defaults: AdamW, lr 1e-4, weight decay 5e-4, batch 2, 40 epochs,
DiceCELoss, the soft Dice score as the accuracy, seed 42. Every Problem 4 variant is
a flag: ``--model unet_noskip`` (4.1), ``--optimizer adam --lr ...`` (4.2),
``--augmentation ...`` (4.3), ``--model smp_unet --encoder_weights ...`` (4.4).

    python main_segmentation.py --dataset data/retina --logdir runs/unet

Writes ``LOGDIR/results.json`` (curves, final metrics, configuration, command,
machine, versions, timings), ``curves.png`` and ``predictions.png``.

Credits: the course template by Johan Obando, Jerry Huang and Pierre-Louis Benveniste.
"""
import argparse
import copy
import math
import re
import socket
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import optim
from tqdm import tqdm

from engine import (Timer, UserError, save_figure, autocast, autocast_dtype, finished, grad_scaler, load_training_state,
                    pick_device, plot_curves, prepare_logdir, run_cli, run_record, save_checkpoint,
                    save_training_state, seed_everything, to_memory_format, write_json)
from unet import UNet
from utils import DiceCELoss, DiceLoss

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm"}
AUGMENTATIONS = ("none", "flip", "affine", "color", "elastic", "combined")
MODELS = ("unet", "unet_noskip", "smp_unet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv=None):
    """
    This function parses the command line arguments.
    """
    parser = argparse.ArgumentParser(description='Retina blood vessel segmentation training script')
    parser.add_argument('--dataset', type=str, default=None, required=True,
                        help='Path to the dataset (the Data folder containing train and test folders)')
    parser.add_argument('--logdir', type=str, default=None, required=True, help='Directory to save logs')
    parser.add_argument('--batch_size', type=int, default=2, help='Batch size (default: %(default)s).')
    parser.add_argument('--epochs', type=int, default=40, help='Number of epochs for training (default: %(default)s).')
    parser.add_argument('--lr', type=float, default=1e-4, help='Learning rate (default: %(default)s).')
    parser.add_argument('--weight_decay', type=float, default=5e-4, help='Weight decay (default: %(default)s).')
    parser.add_argument('--print_every', type=int, default=80,
                        help='Number of minibatches after which we print the loss (default: %(default)s).')
    # Problem 4's variants
    parser.add_argument('--model', choices=MODELS, default='unet',
                        help='unet (graded), unet_noskip (4.1) or smp_unet, the resnet18 UNet of '
                             'segmentation-models-pytorch (4.4) (default: %(default)s).')
    parser.add_argument('--encoder_weights', default='imagenet',
                        help="smp_unet only: 'imagenet' (downloaded), 'none' (from scratch) or the path of a "
                             "torchvision ResNet-18 state dict (default: %(default)s).")
    parser.add_argument('--optimizer', choices=('adamw', 'adam'), default='adamw',
                        help='adam ignores --weight_decay (default: %(default)s).')
    parser.add_argument('--lr_schedule', choices=('constant', 'cosine'), default='constant',
                        help="constant (the template's) or cosine decay to zero over the epochs (default: %(default)s).")
    parser.add_argument('--augmentation', choices=AUGMENTATIONS, default='none',
                        help='Training-time augmentation strategy (default: %(default)s).')
    parser.add_argument('--show_augmentations', type=int, default=0, metavar='N',
                        help='Write augmentations.png with N examples of every strategy.')
    # CPU-sized runs
    parser.add_argument('--crop_size', type=int, default=0,
                        help='Train on random square crops of this size (a multiple of 16); 0 = whole images. '
                             'Evaluation always uses whole images (default: %(default)s).')
    parser.add_argument('--crops_per_image', type=int, default=1,
                        help='With --crop_size: crops drawn from each training image per epoch (default: %(default)s).')
    parser.add_argument('--image_size', type=int, default=0,
                        help='Resize every image to this square size (a multiple of 16); 0 = keep (default: %(default)s).')
    parser.add_argument('--val_fraction', type=float, default=0.0,
                        help='Hold out this fraction of the training fundi (all copies of one eye together) for '
                             'validation and model selection; 0 = validate on the test set as the template does.')
    parser.add_argument('--eval_every', type=int, default=1, help='Evaluate every N epochs (default: %(default)s).')
    # machinery
    parser.add_argument('--device', choices=('auto', 'cuda', 'mps', 'cpu'), default='auto')
    parser.add_argument('--amp', choices=('auto', 'bf16', 'fp16', 'off'), default='auto',
                        help='Mixed precision: auto = bf16 where the CPU or GPU does it natively (default: %(default)s).')
    parser.add_argument('--plain', action='store_true',
                        help="The template's execution: fp32, contiguous tensors (overrides --amp).")
    parser.add_argument('--compile', action='store_true', help='torch.compile the model.')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads for PyTorch; 0 = its default.')
    parser.add_argument('--resume', action='store_true', help='Continue the run in --logdir.')
    parser.add_argument('--save_model', action='store_true', help='Keep the final weights as model.pt.')
    parser.add_argument('--seed', type=int, default=42)
    args = parser.parse_args(argv)
    for name in ('crop_size', 'image_size'):
        if getattr(args, name) % 16:
            parser.error(f'--{name} must be a multiple of 16 (the UNet pools four times)')
    if not 0 <= args.val_fraction < 1:
        parser.error('--val_fraction must be in [0, 1)')
    if min(args.batch_size, args.epochs, args.crops_per_image, args.eval_every) < 1:
        parser.error('--batch_size, --epochs, --crops_per_image and --eval_every must be at least 1')
    return args


# ----------------------------------------------------------------------------- data

def _read(path, mode):
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path}: cannot read it as an image ({err.__class__.__name__}); replace or remove it")


def load_split(folder, image_size=0):
    """Decode every image/mask pair of ``folder/{image,mask}``, matched by file name.

    Returns ``(names, images, masks)``: images ``uint8 [N, 3, H, W]``, masks ``uint8
    [N, 1, H, W]`` in {0, 1} (any mask value above half its range is vessel). Sizes
    not divisible by 16 are zero-padded at the bottom and right; ``sizes`` keeps the
    original ones so that metrics ignore the padding."""
    folder = Path(folder)
    image_dir, mask_dir = folder / "image", folder / "mask"
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise UserError(f"{d}: folder not found; --dataset must hold train/image, train/mask, "
                            f"test/image and test/mask")

    def by_stem(d):
        files = {}
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                stem = re.sub(r"_(mask|manual\d?)$", "", p.stem)  # 01_test_manual1.gif pairs with 01_test.tif
                files[stem] = p
        return files

    images, masks = by_stem(image_dir), by_stem(mask_dir)
    if not images:
        raise UserError(f"{image_dir}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))})")
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        first = unmatched[0]
        where = image_dir if first in images else mask_dir
        raise UserError(f"{where / first}*: has no partner of the same name in "
                        f"{mask_dir if where == image_dir else image_dir} ({len(unmatched)} unmatched); "
                        f"give every image a mask with the same file name")

    names, xs, ys, sizes = [], [], [], []
    for name in sorted(images):
        image, mask = _read(images[name], "RGB"), _read(masks[name], "L")
        if image.size != mask.size:
            raise UserError(f"{masks[name]}: mask is {mask.size[0]}x{mask.size[1]} but its image is "
                            f"{image.size[0]}x{image.size[1]}; they must be the same size")
        if image_size:
            image = image.resize((image_size, image_size), Image.BILINEAR)
            mask = mask.resize((image_size, image_size), Image.NEAREST)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        y = torch.from_numpy(np.array(mask) > 127).to(torch.uint8)[None]
        names.append(name)
        sizes.append(tuple(x.shape[-2:]))
        xs.append(x)
        ys.append(y)
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    height, width = -(-height // 16) * 16, -(-width // 16) * 16
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]))
    return names, torch.stack([pad(x) for x in xs]), torch.stack([pad(y) for y in ys]), sizes


def fundus_id(name):
    """``21_training_3`` -> ``21_training``: the flipped/rotated copies of one eye share an id."""
    return re.sub(r"_\d+$", "", name)


def split_by_fundus(names, val_fraction, seed):
    groups = sorted({fundus_id(n) for n in names})
    n_val = max(1, round(len(groups) * val_fraction))
    if n_val >= len(groups):
        raise UserError(f"--val_fraction {val_fraction} leaves no training fundus out of {len(groups)}")
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(groups, size=n_val, replace=False).tolist())
    val = [i for i, n in enumerate(names) if fundus_id(n) in val_groups]
    train = [i for i, n in enumerate(names) if fundus_id(n) not in val_groups]
    return train, val


def build_augmentation(name):
    """A ``torchvision.transforms.v2`` pipeline that moves image and mask together.

    The mask is a ``tv_tensors.Mask``: geometric transforms resample it with nearest
    neighbour (so it stays binary and aligned) and colour transforms leave it alone."""
    from torchvision.transforms import v2

    flip = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    affine = [v2.RandomAffine(degrees=30, translate=(0.05, 0.05), scale=(0.85, 1.15), shear=5)]
    color = [v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02),
             v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.0))], p=0.3)]
    elastic = [v2.RandomApply([v2.ElasticTransform(alpha=40.0, sigma=6.0)], p=0.7)]
    strategies = {"none": [], "flip": flip, "affine": affine, "color": color, "elastic": elastic,
                  "combined": flip + affine + color}
    return v2.Compose(strategies[name]) if strategies[name] else None


class RetinaTrainSet(torch.utils.data.Dataset):
    """Training samples: augmentation on the whole image, then a random crop."""

    def __init__(self, images, masks, augmentation="none", crop_size=0, crops_per_image=1):
        self.images, self.masks = images, masks
        self.transform = build_augmentation(augmentation)
        self.crop_size, self.repeats = crop_size, crops_per_image if crop_size else 1

    def __len__(self):
        return len(self.images) * self.repeats

    def __getitem__(self, index):
        from torchvision import tv_tensors
        image, mask = self.images[index % len(self.images)], self.masks[index % len(self.masks)]
        if self.transform is not None:
            image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        if self.crop_size:
            height, width = image.shape[-2:]
            top = int(torch.randint(0, height - self.crop_size + 1, ()))
            left = int(torch.randint(0, width - self.crop_size + 1, ()))
            window = (..., slice(top, top + self.crop_size), slice(left, left + self.crop_size))
            image, mask = image[window], mask[window]
        return image.as_subclass(torch.Tensor).float() / 255.0, mask.as_subclass(torch.Tensor).float()


# ----------------------------------------------------------------------------- models

class Normalized(torch.nn.Module):
    """Feeds ImageNet-normalised inputs to a network that expects them."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def _online(host="huggingface.co", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def build_smp_unet(encoder_weights):
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise UserError("--model smp_unet needs segmentation-models-pytorch: pip install -r requirements.txt")
    net = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=1)
    if encoder_weights == "imagenet":
        # smp fetches the weights from the Hugging Face hub, retrying for half a minute when
        # offline: look first, and fail at once with what to do instead
        if not _online():
            raise UserError("cannot download the ImageNet weights of resnet18 (no connection to "
                            "huggingface.co); connect to the internet, or pass --encoder_weights PATH to a "
                            "torchvision ResNet-18 state dict (resnet18-f37072fd.pth from download.pytorch.org)")
        try:
            net = smp.Unet(encoder_name="resnet18", encoder_weights="imagenet", in_channels=3, classes=1)
        except Exception as err:
            raise UserError(f"downloading the ImageNet weights of resnet18 failed ({err.__class__.__name__}); "
                            f"retry, or pass --encoder_weights PATH to a torchvision ResNet-18 state dict")
    elif encoder_weights != "none":
        path = Path(encoder_weights)
        if not path.is_file():
            raise UserError(f"{path}: --encoder_weights file not found; give 'imagenet', 'none' or the path "
                            f"of a torchvision ResNet-18 state dict")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            net.encoder.load_state_dict(state, strict=True)
        except Exception as err:
            raise UserError(f"{path}: not a torchvision ResNet-18 state dict ({str(err).splitlines()[0][:160]})")
    return Normalized(net)


def build_model(args):
    if args.model == "unet":
        return UNet(input_shape=3, num_classes=1)
    if args.model == "unet_noskip":
        return UNet(input_shape=3, num_classes=1, skip_connections=False)
    return build_smp_unet(args.encoder_weights)


# ----------------------------------------------------------------------------- metrics

def dice_score(preds, targets):
    # Compute the dice score using the DiceLoss class
    return 1 - DiceLoss()(preds, targets)


def binary_dice(pred, target):
    """Thresholded Dice of one image: 2|P & T| / (|P| + |T|), 1 when both are empty."""
    intersection = (pred & target).sum().item()
    total = pred.sum().item() + target.sum().item()
    return 1.0 if total == 0 else 2.0 * intersection / total


def pixel_metrics(probs, targets):
    """Accuracy, sensitivity, specificity and ROC AUC over all pixels (threshold 0.5)."""
    from sklearn.metrics import roc_auc_score
    p, t = np.concatenate([x.ravel() for x in probs]), np.concatenate([x.ravel() for x in targets]).astype(bool)
    pred = p >= 0.5
    tp, tn = np.sum(pred & t), np.sum(~pred & ~t)
    fp, fn = np.sum(pred & ~t), np.sum(~pred & t)
    return {
        "accuracy": float((tp + tn) / t.size),
        "sensitivity": float(tp / max(tp + fn, 1)),
        "specificity": float(tn / max(tn + fp, 1)),
        "auc": float(roc_auc_score(t, p)) if 0 < t.sum() < t.size else float("nan"),
    }


# ----------------------------------------------------------------------------- train / evaluate

def train(epoch, model, dataloader, optimizer, scaler, loss_fn, device, args, amp_dtype, channels_last):
    """One epoch. Returns (mean loss, mean soft Dice, seconds); stops early at a non-finite loss."""
    model.train()
    total_loss = total_dice = seen = 0.0
    start = time.perf_counter()
    progress = tqdm(dataloader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True)
    for idx, (X, y) in enumerate(progress):
        X = to_memory_format(X.to(device, non_blocking=True), channels_last)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(X)
        loss = loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            return float("nan"), float("nan"), time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        with torch.no_grad():
            dice = dice_score(logits.float(), y)
        total_loss += loss.item() * len(X)
        total_dice += dice.item() * len(X)
        seen += len(X)
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if idx % args.print_every == 0:
            tqdm.write(f"[TRAIN] Epoch: {epoch}, Iter: {idx}, Loss: {loss.item():.5f}")
    return total_loss / seen, total_dice / seen, time.perf_counter() - start


@torch.no_grad()
def predict(model, images, device, amp_dtype, channels_last):
    """Logits for uint8 images ``[N, 3, H, W]``, one image at a time, in float32 on the CPU."""
    model.eval()
    out = []
    for image in images:
        x = to_memory_format(image[None].to(device).float() / 255.0, channels_last)
        with autocast(device, amp_dtype):
            out.append(model(x).float().cpu())
    return torch.nan_to_num(torch.cat(out), nan=0.0, posinf=50.0, neginf=-50.0)


def evaluate(model, images, masks, sizes, loss_fn, device, amp_dtype, channels_last):
    """Per-image mean of DiceCE loss, soft Dice and thresholded Dice, on whole images
    cropped back to their original sizes (padding excluded)."""
    logits = predict(model, images, device, amp_dtype, channels_last)
    losses, soft, hard = [], [], []
    for logit, mask, (h, w) in zip(logits, masks, sizes):
        logit, mask = logit[None, :, :h, :w], mask[None, :, :h, :w].float()
        losses.append(loss_fn(logit, mask).item())
        soft.append(dice_score(logit, mask).item())
        hard.append(binary_dice(logit > 0, mask.bool()))
    return float(np.mean(losses)), float(np.mean(soft)), float(np.mean(hard)), logits


# ----------------------------------------------------------------------------- figures

def save_predictions_figure(path, images, masks, logits, sizes, names, count=3):
    """Image, ground truth and prediction side by side; errors coloured
    (green: vessel found, red: false positive, blue: missed vessel)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(images))
    fig, axes = plt.subplots(count, 3, figsize=(10, 3.4 * count), squeeze=False)
    for row, i in enumerate(range(count)):
        h, w = sizes[i]
        image = images[i, :, :h, :w].permute(1, 2, 0).numpy()
        truth = masks[i, 0, :h, :w].numpy().astype(bool)
        pred = (logits[i, 0, :h, :w] > 0).numpy()
        errors = np.zeros((h, w, 3))
        errors[pred & truth] = (0.1, 0.8, 0.1)
        errors[pred & ~truth] = (0.9, 0.1, 0.1)
        errors[~pred & truth] = (0.2, 0.4, 1.0)
        dice = binary_dice(torch.from_numpy(pred), torch.from_numpy(truth))
        for ax, img, title in zip(axes[row], (image, truth, errors),
                                  (names[i], "ground truth", f"prediction (Dice {dice:.3f})")):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_title(title)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def save_augmentations_figure(path, images, masks, count, seed):
    """``count`` examples of every strategy on one training image, mask outline drawn on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(AUGMENTATIONS), count, figsize=(2.4 * count, 2.5 * len(AUGMENTATIONS)),
                             squeeze=False)
    with torch.random.fork_rng():  # leave the training's random stream untouched
        torch.manual_seed(seed)
        samples = {name: [RetinaTrainSet(images[:1], masks[:1], augmentation=name)[0] for _ in range(count)]
                   for name in AUGMENTATIONS}
    for row, name in enumerate(AUGMENTATIONS):
        for col, (image, mask) in enumerate(samples[name]):
            ax = axes[row, col]
            ax.imshow(image.permute(1, 2, 0).numpy())
            ax.contour(mask[0].numpy(), levels=[0.5], colors="yellow", linewidths=0.3)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=12)
    fig.suptitle("Training augmentations (yellow: the transformed vessel mask)")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    logdir = prepare_logdir(args.logdir, args.resume)
    if args.resume and finished(logdir):
        print(f"{logdir}: the run is already complete; nothing to do")
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    amp_dtype = None if args.plain else autocast_dtype(device, args.amp)
    channels_last = not args.plain and device.type != "mps"
    seed_everything(args.seed)
    torch.backends.cudnn.benchmark = True
    print(f"Using device: {device} (autocast: {amp_dtype}, channels_last: {channels_last})")

    # Data, decoded once and kept in memory
    dataset = Path(args.dataset)
    names, images, masks, sizes = load_split(dataset / "train", args.image_size)
    test_names, test_images, test_masks, test_sizes = load_split(dataset / "test", args.image_size)
    if args.crop_size and args.crop_size > min(images.shape[-2:]):
        raise UserError(f"--crop_size {args.crop_size} is larger than the training images "
                        f"({images.shape[-1]}x{images.shape[-2]})")
    if args.val_fraction:
        train_idx, val_idx = split_by_fundus(names, args.val_fraction, args.seed)
        val_set = (images[val_idx], masks[val_idx], [sizes[i] for i in val_idx])
        images, masks = images[train_idx], masks[train_idx]
        eval_name = "validation"
    else:
        val_set = (test_images, test_masks, test_sizes)
        eval_name = "test"
    print(f"Dataset Size:\nTrain: {len(images)} - Valid ({eval_name}): {len(val_set[0])} - Test: {len(test_images)}\n")
    if args.show_augmentations:
        save_augmentations_figure(logdir / "augmentations.png", images, masks, args.show_augmentations, args.seed)

    train_set = RetinaTrainSet(images, masks, args.augmentation, args.crop_size, args.crops_per_image)
    shuffle_rng = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) >= args.batch_size,
        pin_memory=device.type == "cuda", generator=shuffle_rng)

    # Model, optimizer, loss
    model = build_model(args).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Initialized {args.model} model with {n_params} parameters")
    if args.optimizer == "adamw":
        optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = optim.Adam(model.parameters(), lr=args.lr)
    scheduler = (optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs) if args.lr_schedule == "cosine"
                 else optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0))
    scaler = grad_scaler(device, amp_dtype)
    loss_fn = DiceCELoss()
    forward_model = torch.compile(model) if args.compile else model

    history = {k: [] for k in ("train_losses", "valid_losses", "train_accs", "valid_accs",
                               "valid_dice_thresholded", "evaluated_epochs", "train_times", "valid_times")}
    start_epoch, diverged, best = 0, False, {"epoch": None, "dice": -1.0, "state": None}
    checkpoint_path = logdir / "checkpoint.pt"
    record = run_record(__file__, argv, args, device, "segmentation_models_pytorch", "sklearn")
    training_state = {"model": model, "optimizer": optimizer, "scaler": scaler, "scheduler": scheduler}
    if args.resume and checkpoint_path.exists():
        state = load_training_state(checkpoint_path, training_state, shuffle_rng)
        history, start_epoch, best = state["history"], state["epoch"] + 1, state["best"]
        record["resumed_at_epoch"] = start_epoch
        print(f"Resuming {logdir} at epoch {start_epoch}")

    wall_start = time.perf_counter()
    prior_seconds = sum(history["train_times"]) + sum(history["valid_times"])
    for epoch in tqdm(range(start_epoch, args.epochs), desc="epochs", initial=start_epoch, total=args.epochs,
                      dynamic_ncols=True):
        loss, acc, seconds = train(epoch, forward_model, train_loader, optimizer, scaler, loss_fn, device, args,
                                   amp_dtype, channels_last)
        if not math.isfinite(loss):
            tqdm.write(f"Non-finite loss at epoch {epoch}: the run diverged; stopping (lr {args.lr})")
            diverged = True
            break
        history["train_losses"].append(loss)
        history["train_accs"].append(acc)
        history["train_times"].append(seconds)
        history.setdefault("learning_rates", []).append(optimizer.param_groups[0]["lr"])
        scheduler.step()

        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            with Timer() as timer:
                v_loss, v_soft, v_hard, _ = evaluate(forward_model, *val_set, loss_fn, device, amp_dtype,
                                                     channels_last)
            history["valid_losses"].append(v_loss)
            history["valid_accs"].append(v_soft)
            history["valid_dice_thresholded"].append(v_hard)
            history["evaluated_epochs"].append(epoch + 1)
            history["valid_times"].append(timer.seconds)
            tqdm.write(f"=== Epoch {epoch}: train loss {loss:.4f} dice {acc:.3f} | {eval_name} loss {v_loss:.4f} "
                       f"dice {v_soft:.3f} thresholded {v_hard:.3f} ({seconds:.0f}+{timer.seconds:.0f} s)")
            if args.val_fraction and v_hard > best["dice"]:
                best = {"epoch": epoch + 1, "dice": v_hard, "state": copy.deepcopy(model.state_dict())}
        if epoch + 1 < args.epochs:
            save_training_state(checkpoint_path, training_state, shuffle_rng, history=history, epoch=epoch, best=best)

    # Final metrics on the test images, with the best-validation model when there is a validation split
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    with Timer() as timer:
        t_loss, t_soft, t_hard, logits = evaluate(model, test_images, test_masks, test_sizes, loss_fn, device,
                                                  amp_dtype, channels_last)
        probs = [torch.sigmoid(l[0, :h, :w]).numpy() for l, (h, w) in zip(logits, test_sizes)]
        truths = [m[0, :h, :w].numpy() for m, (h, w) in zip(test_masks, test_sizes)]
        final = {"dice": t_hard, "soft_dice": t_soft, "loss": t_loss, **pixel_metrics(probs, truths)}

    valid_dice = history["valid_dice_thresholded"]
    results = {
        **{k: history[k] for k in ("train_losses", "valid_losses", "train_accs", "valid_accs")},
        "valid_dice_thresholded": valid_dice,
        "evaluated_epochs": history["evaluated_epochs"],
        "learning_rates": history.get("learning_rates", []),
        "evaluated_on": eval_name,
        "best_epoch": (best["epoch"] if best["epoch"] is not None else
                       history["evaluated_epochs"][int(np.argmax(valid_dice))] if valid_dice else None),
        "final_metrics": final,
        "final_metrics_model": "best validation epoch" if best["state"] is not None else "last epoch",
        "diverged": diverged,
        "epochs_completed": len(history["train_losses"]),
        "n_parameters": n_params,
        "n_train_images": len(images),
        "timings": {"train_seconds_per_epoch": history["train_times"], "valid_seconds": history["valid_times"],
                    "final_eval_seconds": timer.seconds,
                    "total_seconds": prior_seconds + time.perf_counter() - wall_start},
        **record,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"Test: thresholded Dice {final['dice']:.4f}, accuracy {final['accuracy']:.4f}, AUC {final['auc']:.4f}")
    print(f'Writing training logs to {logdir}...')
    if history["valid_losses"]:
        plot_curves(history, logdir / "curves.png", title=f"{args.model}, {logdir.name}", accuracy_label="soft Dice",
                    valid_epochs=history["evaluated_epochs"])
    save_predictions_figure(logdir / "predictions.png", test_images, test_masks, logits, test_sizes, test_names)
    if args.save_model:
        save_checkpoint(logdir / "model.pt", model=model.state_dict(), config=vars(args))
    write_json(logdir / "results.json", results)
    checkpoint_path.unlink(missing_ok=True)


if __name__ == "__main__":
    run_cli(main)
