"""
Problem 2, question 6: PathMNIST tissue classification, MLP against MobileNet.

The assignment's hyperparameters are the defaults (AdamW, lr 1e-3, weight decay
5e-4, batch 128, 15 epochs, seed 42); compare the two models without changing them:

    python main_classification.py --model mlp --logdir runs/mlp
    python main_classification.py --model mobilenet --logdir runs/mobilenet
    python -m tools.plot_runs runs/mlp runs/mobilenet --out mlp_vs_mobilenet.png

PathMNIST comes through ``medmnist``: downloaded into ``--data_dir`` when the file is
missing, read from there otherwise. Writes ``LOGDIR/results.json`` (curves, test
loss/accuracy/AUC of the last and of the best-validation epoch, confusion matrix,
configuration, command, machine, versions, timings), ``curves.png`` and
``confusion.png``.
"""
import math
import time
from argparse import Namespace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import optim
from torchvision import transforms
from tqdm import tqdm

from medimg import figures, workloads
from medimg.classification_models import NUM_CLASSES, Scores, build_classifier
from medimg.cli import UserError, reachable, run_cli
from medimg.execution import (
    Execution,
    default_num_workers,
    keep_for_resume,
    kept_for_resume,
    pick_device,
    recheck,
    seed_everything,
)
from medimg.options import parse_classification_args
from medimg.runfiles import check_resumable, code_fingerprint, run_folder, run_record, write_json
from medimg.training import Progress, Timer, epoch_summary, training_step

ZENODO = "https://zenodo.org/records/10519652"


# ----------------------------------------------------------------------------- data

def load_pathmnist(data_dir: str, size: int, subset: int, seed: int) -> list[torch.utils.data.Subset]:
    """The three PathMNIST splits as (train, val, test) datasets with the template's
    transforms. Downloads only when the file is missing (medmnist would re-download a
    present file whose checksum differs); every failure is one clear line."""
    import medmnist  # here, not at the top: it takes a second to import, and only this run's data needs it

    data_dir = Path(data_dir)
    filename = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
    path = data_dir / filename
    info = medmnist.INFO["pathmnist"]
    url = info["url" if size == 28 else f"url_{size}"]
    if not path.exists():
        if not reachable("zenodo.org"):
            raise UserError(f"{path} not found and zenodo.org is unreachable: download {filename} from {url} "
                            f"(or {ZENODO}) into {data_dir}/, or run where the internet is reachable")
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            medmnist.PathMNIST(split="test", root=str(data_dir), size=size, download=True)
        except Exception:
            Path(str(path) + ".part").unlink(missing_ok=True)
            raise UserError(f"downloading {filename} into {data_dir}/ failed: download it by hand from {url}")

    normalize = transforms.Normalize(mean=[0.5], std=[0.5])
    train_transform = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
        transforms.ToTensor(),
        normalize,
    ])
    eval_transform = transforms.Compose([transforms.ToTensor(), normalize])

    splits = []
    for split, transform in (("train", train_transform), ("val", eval_transform), ("test", eval_transform)):
        try:
            dataset = medmnist.PathMNIST(split=split, transform=transform, root=str(data_dir), size=size)
            n, shape = dataset.imgs.shape[0], dataset.imgs.shape[1:]
        except Exception as err:
            raise UserError(f"{path}: not a readable PathMNIST file ({err.__class__.__name__}: "
                            f"{str(err).splitlines()[0][:120] if str(err) else 'no detail'}); delete it and download "
                            f"{filename} again from {url}")
        if shape != (size, size, 3) or dataset.labels.shape[0] != n or n == 0:
            raise UserError(f"{path}: {split} split has images of shape {shape} and {dataset.labels.shape[0]} labels "
                            f"for {n} images; expected ({size}, {size}, 3) RGB images with one label each")
        # Index through a Subset: medmnist's own __len__ asserts the official split sizes.
        indices = np.arange(n)
        if subset and subset < n:
            indices = np.sort(np.random.default_rng(seed).choice(n, size=subset, replace=False))
        splits.append(torch.utils.data.Subset(dataset, indices.tolist()))
    return splits


# ----------------------------------------------------------------------------- train / test

def train(epoch: int, model: nn.Module, loader: torch.utils.data.DataLoader, optimizer: optim.Optimizer,
          scaler: torch.amp.GradScaler, criterion: Callable, execution: Execution,
          print_every: int) -> tuple[float, float]:
    """One epoch; returns (mean per-sample loss, accuracy). The sums stay on the device
    until the end (and the logging steps): no per-step sync on a GPU."""
    model.train()
    total_loss = correct = 0.0
    seen = 0
    for idx, (X, y) in enumerate(tqdm(loader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True)):
        X, y = execution.to_input(X), y.to(execution.device, non_blocking=True).view(-1).long()
        loss, scores = training_step(model, X, y, criterion, optimizer, scaler, execution)
        total_loss = total_loss + loss * len(y)
        correct = correct + (scores.argmax(dim=1) == y).sum()
        seen += len(y)
        if idx % print_every == 0:
            tqdm.write(f"[TRAIN] Epoch: {epoch}, Iter: {idx}, Loss: {loss.item():.5f}")
    return float(total_loss) / seen, float(correct) / seen


@torch.no_grad()
def test(model: Scores, loader: torch.utils.data.DataLoader, criterion: Callable,
         execution: Execution) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``model`` is a ``Scores``. Returns (mean per-sample loss, accuracy, class
    probabilities [N, 9], labels [N])."""
    model.eval()
    total_loss, probs, labels = 0.0, [], []
    for X, y in loader:
        X, y = execution.to_input(X), y.to(execution.device, non_blocking=True).view(-1).long()
        with execution.autocast():
            scores = model(X).float()
        total_loss += criterion(scores, y).item() * len(y)
        probs.append(model.to_probabilities(scores).cpu())
        labels.append(y.cpu())
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    return total_loss / len(labels), float((probs.argmax(1) == labels).mean()), probs, labels


def test_metrics(loss: float, acc: float, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Loss, accuracy, macro one-vs-rest ROC AUC (None unless every class is present) and
    the confusion matrix (rows: true class) of class probabilities ``[N, 9]`` and labels ``[N]``."""
    from sklearn.metrics import confusion_matrix, roc_auc_score  # imported when first needed: a second at every start
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)  # bf16 softmax outputs sum to 1 only within ~1e-3
    present = np.unique(labels)
    try:  # one-vs-rest, macro-averaged: the MedMNIST benchmark's AUC
        auc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=np.arange(NUM_CLASSES))) \
            if len(present) == NUM_CLASSES else None
    except ValueError:
        auc = None
    return {"loss": loss, "accuracy": acc, "auc": auc,
            "confusion_matrix": confusion_matrix(labels, probs.argmax(1), labels=np.arange(NUM_CLASSES)).tolist()}


# ----------------------------------------------------------------------------- main

def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_classification_args(argv)
    logdir = run_folder(args.logdir, args.resume)
    if logdir is None:
        return
    code = code_fingerprint(__file__)  # what trains this run: a resume must be made by the same code
    if args.resume:
        check_resumable(logdir, code)
    device = pick_device(args.device)
    seed_everything(args.seed)
    torch.backends.cudnn.benchmark = True

    train_set, val_set, test_set = load_pathmnist(args.data_dir, args.size, args.subset, args.seed)
    print(f"PathMNIST-{args.size}: train {len(train_set)}, val {len(val_set)}, test {len(test_set)}")
    logdir.mkdir(parents=True, exist_ok=True)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    shuffle_rng = torch.Generator().manual_seed(args.seed)

    def loader(dataset, shuffle):
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=shuffle, num_workers=workers,
                                           pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                           generator=shuffle_rng if shuffle else None)
    train_loader, val_loader, test_loader = loader(train_set, True), loader(val_set, False), loader(test_set, False)

    model = build_classifier(args.model, args.size)
    # a resumed run computes with the execution the interrupted one chose, whatever was measured since
    execution, selection = (args.resume and kept_for_resume(logdir / "execution.json", device)) or \
        workloads.for_classification(args, device, model)
    keep_for_resume(logdir / "execution.json", execution, selection)
    model = execution.prepare(model)
    print(f"Using device: {execution} ({selection['how']})")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Initialized {args.model} with {n_params} parameters")
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                            **execution.optimizer_options())
    scaler, criterion = execution.grad_scaler(), nn.CrossEntropyLoss()
    scores = Scores(model, args.loss_on_probabilities)
    forward_model = torch.compile(scores) if args.compile else scores
    record = run_record(__file__, argv, args, execution.device, "medmnist", "sklearn", code=code)

    # The epoch loop: train, evaluate, keep the best, checkpoint. The checkpoint holds the
    # parts, the random streams and the progress: a resumed run continues bit for bit.
    checkpoint = logdir / "checkpoint.pt"
    parts = {"model": model, "optimizer": optimizer, "scaler": scaler}
    progress = Progress.load(checkpoint, parts, shuffle_rng, code["sha256"]) if args.resume and checkpoint.exists() \
        else Progress(code=code["sha256"])
    for epoch in tqdm(range(progress.epochs_done, args.epochs), desc="epochs", initial=progress.epochs_done,
                      total=args.epochs, dynamic_ncols=True):
        learning_rate = optimizer.param_groups[0]["lr"]
        with Timer() as train_timer:
            loss, acc = train(epoch, forward_model, train_loader, optimizer, scaler, criterion, execution,
                              args.print_every)
        if not math.isfinite(loss):  # its non-finite steps were skipped: the weights are the last finite ones
            tqdm.write(f"Non-finite loss at epoch {epoch}: the run diverged; stopping (lr {learning_rate})")
            progress.diverged = True
            break
        progress.history.append(train_losses=loss, train_accs=acc, train_times=train_timer.seconds,
                                learning_rates=learning_rate)
        if epoch == 1:  # the first epoch includes warm-up; an epoch also loads batches: doubt only beyond 15%
            recheck(selection, train_timer.seconds / len(train_loader), tolerance=0.15)
        with Timer() as eval_timer:
            valid_loss, valid_acc, _, _ = test(forward_model, val_loader, criterion, execution)
        metrics = {"valid_losses": valid_loss, "valid_accs": valid_acc}
        progress.history.append(evaluated_epochs=epoch + 1, valid_times=eval_timer.seconds, **metrics)
        tqdm.write(epoch_summary(epoch, loss, acc, metrics, train_timer.seconds, eval_timer.seconds))
        progress.update_best(epoch + 1, valid_acc, model)
        progress.epochs_done = epoch + 1
        if progress.epochs_done < args.epochs:
            progress.save(checkpoint, parts, shuffle_rng)
    train_seconds = progress.seconds()

    with Timer() as timer:
        last = test_metrics(*test(scores, test_loader, criterion, execution))
        best = last  # the last epoch's weights are the best ones unless an earlier evaluation scored higher
        if progress.best_state is not None and progress.best_epoch != progress.epochs_done:
            model.load_state_dict(progress.best_state)
            best = test_metrics(*test(scores, test_loader, criterion, execution))
    print(f"Test (last epoch): loss {last['loss']:.4f}, accuracy {last['accuracy']:.4f}, AUC {last['auc']}")
    print(f"Test (best validation epoch {progress.best_epoch}): accuracy {best['accuracy']:.4f}")
    write_outputs(logdir, args, progress, last, best, train_seconds, timer.seconds, {
        **record, "execution": {**execution.describe(), "selection": selection}, "n_parameters": n_params,
        "n_samples": {"train": len(train_set), "val": len(val_set), "test": len(test_set)}})


def write_outputs(logdir: Path, args: Namespace, progress: Progress, last: dict, best: dict,
                  train_seconds: float, test_seconds: float, record: dict) -> None:
    """results.json (the template's keys first), curves.png and confusion.png."""
    import medmnist  # for the class names; see load_pathmnist
    h = progress.history
    results = {
        **{k: h.get(k, []) for k in ("train_losses", "valid_losses", "train_accs", "valid_accs")},
        "test_loss": last["loss"], "test_acc": last["accuracy"], "test_auc": last["auc"],
        "confusion_matrix": last["confusion_matrix"],
        "best_epoch": progress.best_epoch,
        "best_valid_acc": None if progress.best_state is None else progress.best_score,
        "test_at_best_epoch": best, "diverged": progress.diverged,
        **({"resumed_at_epoch": progress.resumed_at_epoch} if progress.resumed_at_epoch is not None else {}),
        "timings": {"train_seconds_per_epoch": h.get("train_times", []), "valid_seconds": h.get("valid_times", []),
                    "test_seconds": test_seconds, "total_seconds": train_seconds + test_seconds},
        **record,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"Writing training logs to {logdir}...")
    if h.get("valid_losses"):
        figures.plot_curves(h, logdir / "curves.png", title=f"{args.model} on PathMNIST-{args.size}")
    class_names = [medmnist.INFO["pathmnist"]["label"][str(i)] for i in range(NUM_CLASSES)]
    figures.confusion_figure(last["confusion_matrix"], logdir / "confusion.png",
                             f"{args.model}: test confusion matrix (accuracy {last['accuracy']:.3f})", class_names)
    write_json(logdir / "results.json", results)
    (logdir / "checkpoint.pt").unlink(missing_ok=True)
    (logdir / "execution.json").unlink(missing_ok=True)


if __name__ == "__main__":
    run_cli(main)
