"""
Problems 3 and 4: retina blood-vessel segmentation with a UNet.

Trains on ``DATASET/train/{image,mask}`` and evaluates on ``DATASET/test/{image,mask}``
(or on a validation split of the training eyes, ``--val_fraction``), with the
assignment's defaults: AdamW, lr 1e-4, weight decay 5e-4, batch 2, 40 epochs,
DiceCELoss, the soft Dice score as the accuracy, seed 42. Every Problem 4 variant is
a flag: ``--model unet_noskip`` (4.1), ``--optimizer adam --lr ...`` (4.2),
``--augmentation ...`` (4.3), ``--model smp_unet --encoder ... --encoder_weights ...`` (4.4).

    python main_segmentation.py --dataset data/retina --logdir runs/unet

Writes ``LOGDIR/results.json`` (curves, final metrics, configuration, command,
machine, versions, timings), ``curves.png``, ``predictions.png``, every test image's
thresholded prediction as a page of ``test_predictions.tif`` (1-bit, in the order of
``final_metrics.per_image_dice``), and the first test image's thresholded prediction and truth
as 1-bit PNGs (``example_*.png``, for side-by-side figures).

Credits: the course template by Johan Obando, Jerry Huang and Pierre-Louis Benveniste.
"""
import hashlib
import math
import time
from argparse import Namespace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn, optim
from tqdm import tqdm

from medimg import figures, workloads
from medimg.cli import UserError, run_cli
from medimg.diagnostics import block_gradient_norms, dead_relu_fraction
from medimg.execution import Execution, keep_for_resume, kept_for_resume, pick_device, recheck, seed_everything
from medimg.options import parse_segmentation_args
from medimg.retina import (
    RetinaTrainSet,
    Split,
    fundus_id,
    one_copy_per_eye,
    split_by_fundus,
    subset_of_fundi,
)
from medimg.runfiles import check_resumable, code_fingerprint, run_folder, run_record, save_checkpoint, write_json
from medimg.segmentation_metrics import (
    constant_prediction_dice,
    pixel_metrics,
    soft_dice,
    thresholded_dice,
)
from medimg.segmentation_models import build_model
from medimg.training import Progress, Timer, epoch_summary, training_step
from utils import DiceCELoss

# What each curve of results.json measures: curves drawn side by side must be the same measure.
MEASURES = {
    "train_losses": "DiceCE loss, mean over the epoch's training batches (random crops when --crop_size, "
                    "augmented, train mode)",
    "train_accs": "soft Dice pooled over each training batch, mean over the epoch (as train_losses)",
    "valid_losses": "DiceCE loss per whole evaluation image (eval mode), mean over images",
    "valid_accs": "soft Dice per whole evaluation image (eval mode), mean over images",
    "valid_dice_thresholded": "thresholded Dice (probability > 0.5) per whole evaluation image, mean",
    "train_whole_losses": "as valid_losses, on one copy of every training eye",
    "train_whole_soft_dice": "as valid_accs, on one copy of every training eye",
    "train_whole_dice_thresholded": "as valid_dice_thresholded, on one copy of every training eye",
}


# ----------------------------------------------------------------------------- data

def load_data(args: Namespace) -> tuple[Split, Split, Split, str]:
    """Decode the dataset once: ``(train, evaluation, test, evaluation_name)``. The evaluation
    split is the test split ("test"), or with ``--val_fraction`` the held-out training eyes
    ("validation", one copy of each eye); ``--train_fraction`` keeps a part of the training eyes."""
    dataset = Path(args.dataset)
    train, test = Split.load(dataset / "train", args.image_size), Split.load(dataset / "test", args.image_size)
    if args.crop_size and args.crop_size > min(train.images.shape[-2:]):
        raise UserError(f"--crop_size {args.crop_size} is larger than the training images "
                        f"({train.images.shape[-1]}x{train.images.shape[-2]})")
    evaluation, evaluation_name = test, "test"
    if args.val_fraction:  # held-out eyes, one copy of each: measured as the training eyes are
        train_idx, val_idx = split_by_fundus(train.names, args.val_fraction, args.seed)
        held_out = train.subset(val_idx)
        train, evaluation = train.subset(train_idx), held_out.subset(one_copy_per_eye(held_out.names))
        evaluation_name = "validation"
    if args.train_fraction < 1:
        train = train.subset(subset_of_fundi(train.names, args.train_fraction, args.seed))
    return train, evaluation, test, evaluation_name


# ----------------------------------------------------------------------------- train / evaluate

def train(epoch: int, model: nn.Module, dataloader: torch.utils.data.DataLoader, optimizer: optim.Optimizer,
          scaler: torch.amp.GradScaler, loss_fn: Callable, execution: Execution,
          print_every: int) -> tuple[float, float]:
    """One epoch. Returns (mean loss, mean soft Dice over the batches); the loss is NaN when
    a step's loss was not finite (those steps left the weights alone). The sums stay on the
    device and are read every ``print_every`` steps and at the end: no per-step sync on a GPU."""
    model.train()
    total_loss = total_dice = 0.0
    seen = 0
    progress = tqdm(dataloader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True)
    for idx, (X, y) in enumerate(progress):
        X, y = execution.to_input(X), y.to(execution.device, non_blocking=True)
        loss, logits = training_step(model, X, y, loss_fn, optimizer, scaler, execution)
        with torch.no_grad():
            total_dice = total_dice + soft_dice(logits.float(), y) * len(X)
        total_loss = total_loss + loss * len(X)
        seen += len(X)
        if idx % print_every == 0:
            progress.set_postfix(loss=f"{loss.item():.4f}")
            tqdm.write(f"[TRAIN] Epoch: {epoch}, Iter: {idx}, Loss: {loss.item():.5f}")
    return float(total_loss) / seen, float(total_dice) / seen


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, execution: Execution) -> torch.Tensor:
    """Logits ``[N, 1, H, W]`` for uint8 images ``[N, 3, H, W]``, one image at a time, in
    float32 on the CPU (non-finite values clamped, so that metrics stay defined)."""
    model.eval()
    out = []
    for image in images:
        with execution.autocast():
            out.append(model(execution.to_input(image[None].float() / 255.0)).float().cpu())
    return torch.nan_to_num(torch.cat(out), nan=0.0, posinf=50.0, neginf=-50.0)


def evaluate(model: nn.Module, split: Split, loss_fn: Callable,
             execution: Execution) -> tuple[dict, torch.Tensor]:
    """Per-image means of the DiceCE loss, the soft Dice and the thresholded Dice on whole
    images cropped back to their original sizes (padding excluded), the thresholded Dice of
    each image (``per_image_dice``, in ``split.names`` order), and the logits ``[N, 1, H, W]``."""
    logits = predict(model, split.images, execution)
    losses, soft, hard = [], [], []
    for logit, mask, (h, w) in zip(logits, split.masks, split.sizes):
        logit, mask = logit[None, :, :h, :w], mask[None, :, :h, :w].float()
        losses.append(loss_fn(logit, mask).item())
        soft.append(soft_dice(logit, mask).item())
        hard.append(thresholded_dice(logit > 0, mask.bool()))
    return {"loss": float(np.mean(losses)), "soft_dice": float(np.mean(soft)),
            "thresholded_dice": float(np.mean(hard)), "per_image_dice": hard}, logits


def evaluate_epoch(model: nn.Module, eval_split: Split, train_eyes: Optional[Split], loss_fn: Callable,
                   execution: Execution) -> dict[str, float]:
    """The history entries of one evaluation: the evaluation images, and, unless
    ``train_eyes`` is None (``--train_eval never``), the training eyes measured the same way
    (whole images, eval mode), so the two compare."""
    valid, _ = evaluate(model, eval_split, loss_fn, execution)
    entries = {"valid_losses": valid["loss"], "valid_accs": valid["soft_dice"],
               "valid_dice_thresholded": valid["thresholded_dice"]}
    if train_eyes is not None:
        whole, _ = evaluate(model, train_eyes, loss_fn, execution)
        entries.update(train_whole_losses=whole["loss"], train_whole_soft_dice=whole["soft_dice"],
                       train_whole_dice_thresholded=whole["thresholded_dice"])
    return entries


def test(model: nn.Module, split: Split, loss_fn: Callable, execution: Execution) -> tuple[dict, torch.Tensor]:
    """The final metrics on the test images (thresholded and soft Dice, loss, pixel
    metrics, and the thresholded Dice of each image by name, for paired comparisons between
    runs), and their logits ``[N, 1, H, W]``."""
    metrics, logits = evaluate(model, split, loss_fn, execution)
    probs = [torch.sigmoid(l[0, :h, :w]).numpy() for l, (h, w) in zip(logits, split.sizes)]
    truths = [m[0, :h, :w].numpy() for m, (h, w) in zip(split.masks, split.sizes)]
    final = {"dice": metrics["thresholded_dice"], "soft_dice": metrics["soft_dice"], "loss": metrics["loss"],
             **pixel_metrics(probs, truths),
             "per_image_dice": dict(zip(split.names, metrics["per_image_dice"]))}
    return final, logits


def initial_gradient_norms(model: nn.Module, split: Split, args: Namespace, loss_fn: Callable,
                           execution: Execution) -> dict:
    """Per-block gradient norms of the untrained model on a fixed batch: the first
    ``batch_size`` training images, centre-cropped to ``--crop_size`` (no random stream used)."""
    images, masks = split.images[:args.batch_size], split.masks[:args.batch_size]
    if args.crop_size:
        height, width = images.shape[-2:]
        top, left = (height - args.crop_size) // 2, (width - args.crop_size) // 2
        window = (..., slice(top, top + args.crop_size), slice(left, left + args.crop_size))
        images, masks = images[window], masks[window]
    return block_gradient_norms(model, images, masks, loss_fn, execution)


def weights_digest(model: nn.Module) -> str:
    """The SHA-256 of the model's weights (names, shapes and values), the first 16 hex digits."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def make_optimizer(model: nn.Module, args: Namespace,
                   options: dict) -> tuple[optim.Optimizer, Optional[optim.lr_scheduler.LRScheduler]]:
    """``--optimizer`` over the model's parameters with the execution's ``options`` (fused on
    a GPU), and the ``--lr_schedule`` scheduler (None when constant)."""
    if args.optimizer == "adamw":
        optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, **options)
    else:
        optimizer = optim.Adam(model.parameters(), lr=args.lr, **options)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs) \
        if args.lr_schedule == "cosine" else None
    return optimizer, scheduler


# ----------------------------------------------------------------------------- main

def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_segmentation_args(argv)
    logdir = run_folder(args.logdir, args.resume)
    if logdir is None:
        return
    code = code_fingerprint(__file__)  # what trains this run: a resume must be made by the same code
    if args.resume:
        check_resumable(logdir, code)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    seed_everything(args.seed)
    torch.backends.cudnn.benchmark = True

    # Data, decoded once and kept in memory; everything that can fail does so before logdir exists
    train_split, eval_split, test_split, eval_name = load_data(args)
    print(f"Dataset Size:\nTrain: {len(train_split)} - Valid ({eval_name}): {len(eval_split)} "
          f"- Test: {len(test_split)}\n")
    # whole training images to evaluate as the evaluation images are: one copy of every eye
    train_eyes = train_split.subset(one_copy_per_eye(train_split.names)) if args.train_eval == "every" else None
    model, weights = build_model(args.model, args.encoder, args.encoder_weights, args.base_channels)
    # a resumed run computes with the execution the interrupted one chose, whatever was measured since
    execution, selection = (args.resume and kept_for_resume(logdir / "execution.json", device)) or \
        workloads.for_segmentation(args, device, model, args.crop_size or train_split.images.shape[-1])
    model = execution.prepare(model)
    print(f"Using device: {execution} ({selection['how']})")
    logdir.mkdir(parents=True, exist_ok=True)
    keep_for_resume(logdir / "execution.json", execution, selection)
    if args.show_augmentations:
        figures.save_augmentations_figure(logdir / "augmentations.png", train_split.images[0],
                                          train_split.masks[0], args.show_augmentations, args.seed)

    # the training images live on the device (80 x 3 x 512 x 512 bytes: 63 MB), so a GPU
    # augments and crops them itself instead of waiting for the CPU
    train_set = RetinaTrainSet(train_split.images.to(execution.device), train_split.masks.to(execution.device),
                               args.augmentation, args.crop_size, args.crops_per_image)
    shuffle_rng = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) >= args.batch_size,
        generator=shuffle_rng)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Initialized {args.model} model with {n_params} parameters")
    optimizer, scheduler = make_optimizer(model, args, execution.optimizer_options())
    scaler, loss_fn = execution.grad_scaler(), DiceCELoss()
    forward_model = torch.compile(model) if args.compile else model
    record = run_record(__file__, argv, args, execution.device, "segmentation_models_pytorch", "sklearn", "timm",
                        code=code)
    # what the seed decides, so a test can show two seeds differ and one seed repeats: the initial
    # weights, then (in the first epoch) the order of the samples and each sample as augmented
    record["seed_trace"] = {"initial_weights_sha256": weights_digest(model)}
    record["initial_gradient_norms"] = initial_gradient_norms(model, train_split, args, loss_fn, execution)

    # The epoch loop: train, evaluate, keep the best, checkpoint. The checkpoint holds the
    # parts, the random streams and the progress: a resumed run continues bit for bit.
    checkpoint = logdir / "checkpoint.pt"
    parts = {"model": model, "optimizer": optimizer, "scaler": scaler, "scheduler": scheduler}
    progress = Progress.load(checkpoint, parts, shuffle_rng, code["sha256"]) if args.resume and checkpoint.exists() \
        else Progress(code=code["sha256"])
    for epoch in tqdm(range(progress.epochs_done, args.epochs), desc="epochs", initial=progress.epochs_done,
                      total=args.epochs, dynamic_ncols=True):
        learning_rate = optimizer.param_groups[0]["lr"]
        train_set.trace = {} if epoch == 0 else None
        with Timer() as train_timer:
            loss, dice = train(epoch, forward_model, train_loader, optimizer, scaler, loss_fn, execution,
                               args.print_every)
        if epoch == 0:
            record["seed_trace"].update(first_epoch_order=list(train_set.trace),
                                        first_epoch_samples_sha256=list(train_set.trace.values()))
        elif "first_epoch_order" not in record["seed_trace"]:  # resumed after the first epoch
            record["seed_trace"].setdefault("first_epoch", f"not traced: resumed at epoch {epoch}")
        if not math.isfinite(loss):  # its non-finite steps were skipped: the weights are the last finite ones
            tqdm.write(f"Non-finite loss at epoch {epoch}: the run diverged; stopping (lr {learning_rate})")
            progress.diverged = True
            break
        progress.history.append(train_losses=loss, train_accs=dice, train_times=train_timer.seconds,
                                learning_rates=learning_rate)
        if epoch == 1:  # the first epoch includes warm-up; an epoch also loads batches: doubt only beyond 15%
            recheck(selection, train_timer.seconds / len(train_loader), tolerance=0.15)
        if scheduler is not None:
            scheduler.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            with Timer() as eval_timer:
                metrics = evaluate_epoch(forward_model, eval_split, train_eyes, loss_fn, execution)
            progress.history.append(evaluated_epochs=epoch + 1, valid_times=eval_timer.seconds, **metrics)
            tqdm.write(epoch_summary(epoch, loss, dice, metrics, train_timer.seconds, eval_timer.seconds))
            if args.val_fraction and args.final_weights == "best":  # select on held-out eyes, never on test images
                progress.update_best(epoch + 1, metrics["valid_dice_thresholded"], model)
        progress.epochs_done = epoch + 1
        if progress.epochs_done < args.epochs:
            progress.save(checkpoint, parts, shuffle_rng)
    train_seconds = progress.seconds()

    # Final metrics on the test images, with the best-validation weights when there is a validation split
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    with Timer() as timer:
        final, logits = test(model, test_split, loss_fn, execution)
    with Timer() as eyes_timer:  # the same weights on the training eyes and held-out eyes, per image
        eyes = train_split.subset(one_copy_per_eye(train_split.names))
        final["per_image_dice_train_eyes"] = dict(zip(eyes.names, evaluate(model, eyes, loss_fn, execution)[0]
                                                      ["per_image_dice"]))
        if eval_name == "validation":
            final["per_image_dice_validation"] = dict(zip(eval_split.names, evaluate(
                model, eval_split, loss_fn, execution)[0]["per_image_dice"]))
    record["final_eyes_seconds"] = eyes_timer.seconds  # results.json's timings
    # what predicting every pixel a vessel scores on the evaluation images: the floor of the valid_* curves
    record["evaluation_baselines"] = {
        "evaluation_all_vessel_dice": constant_prediction_dice(eval_split.masks, eval_split.sizes, True)}
    record["dead_relu_fraction"] = dead_relu_fraction(model, test_split.images[:4], execution)
    print(f"Test: thresholded Dice {final['dice']:.4f}, accuracy {final['accuracy']:.4f}, AUC {final['auc']:.4f}")
    write_outputs(logdir, args, progress, final, logits, test_split, train_seconds, timer.seconds, {
        **record, "execution": {**execution.describe(), "selection": selection}, "model_weights": weights,
        "n_parameters": n_params, "n_train_images": len(train_split),
        "n_train_fundi": len({fundus_id(n) for n in train_split.names}), "evaluated_on": eval_name})
    if args.save_model:
        save_checkpoint(logdir / "model.pt", model=model.state_dict(), config=vars(args))


def write_outputs(logdir: Path, args: Namespace, progress: Progress, final: dict, logits: torch.Tensor,
                  test_split: Split, train_seconds: float, test_seconds: float, record: dict) -> None:
    """results.json (the template's keys first), curves.png, predictions.png and the example masks."""
    h = progress.history
    valid_dice = h.get("valid_dice_thresholded", [])
    results = {
        **{k: h.get(k, []) for k in ("train_losses", "valid_losses", "train_accs", "valid_accs",
                                     "valid_dice_thresholded", "evaluated_epochs", "learning_rates",
                                     "train_whole_losses", "train_whole_soft_dice", "train_whole_dice_thresholded")},
        "measures": MEASURES,
        "best_epoch": (progress.best_epoch if progress.best_state is not None else
                       h["evaluated_epochs"][int(np.argmax(valid_dice))] if valid_dice else None),
        "final_metrics": final,
        "final_metrics_model": "best validation epoch" if progress.best_state is not None else "last epoch",
        "final_metrics_images": {"per_image_dice": "test images", "per_image_dice_train_eyes":
                                 "one copy of every training eye",
                                 **({"per_image_dice_validation": "one copy of every held-out eye"}
                                    if "per_image_dice_validation" in final else {})},
        "baselines": {"vessel_fraction": float(np.mean([mask[0, :height, :width].float().mean().item()
                                                        for mask, (height, width)
                                                        in zip(test_split.masks, test_split.sizes)])),
                      "all_vessel_dice": constant_prediction_dice(test_split.masks, test_split.sizes, True),
                      **record.pop("evaluation_baselines"),
                      "all_background_dice": constant_prediction_dice(test_split.masks, test_split.sizes, False)},
        "diverged": progress.diverged,
        "epochs_completed": len(h.get("train_losses", [])),
        **({"resumed_at_epoch": progress.resumed_at_epoch} if progress.resumed_at_epoch is not None else {}),
        "timings": {"train_seconds_per_epoch": h.get("train_times", []), "valid_seconds": h.get("valid_times", []),
                    "final_eval_seconds": test_seconds, "final_eyes_seconds": record["final_eyes_seconds"],
                    "total_seconds": train_seconds + test_seconds + record.pop("final_eyes_seconds")},
        **record,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f'Writing training logs to {logdir}...')
    if h.get("valid_losses"):
        epochs, evaluated = np.arange(1, len(h["train_losses"]) + 1), h["evaluated_epochs"]
        evaluation = record["evaluated_on"]

        def whole_images(train_key, valid_key):  # the training eyes' curve only when they were evaluated
            curves = [("training images", evaluated, h[train_key])] if h.get(train_key) else []
            return curves + [(f"{evaluation} images", evaluated, h[valid_key])]
        figures.plot_panels([
            ("DiceCE loss, whole images, eval mode", whole_images("train_whole_losses", "valid_losses")),
            ("soft Dice, whole images, eval mode", whole_images("train_whole_soft_dice", "valid_accs")),
            ("DiceCE loss on training batches", [("train mode, running mean", epochs, h["train_losses"])]),
        ], logdir / "curves.png", title=f"{args.model}, {logdir.name}")
    figures.save_predictions_figure(logdir / "predictions.png", test_split.images, test_split.masks, logits,
                                    test_split.sizes, test_split.names)
    # the first test image's thresholded prediction and its truth, for the report's side-by-side panels
    (height, width), name = test_split.sizes[0], Path(test_split.names[0]).stem
    figures.save_mask_png(logdir / f"example_{name}_prediction.png", (logits[0, 0, :height, :width] > 0).numpy())
    figures.save_mask_png(logdir / f"example_{name}_truth.png",
                          test_split.masks[0, 0, :height, :width].numpy().astype(bool))
    figures.save_mask_pages(logdir / "test_predictions.tif", [(l[0, :h, :w] > 0).numpy() for l, (h, w)
                                                               in zip(logits, test_split.sizes)])
    write_json(logdir / "results.json", results)
    (logdir / "checkpoint.pt").unlink(missing_ok=True)
    (logdir / "execution.json").unlink(missing_ok=True)


if __name__ == "__main__":
    run_cli(main)
