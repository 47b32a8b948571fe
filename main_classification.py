"""
Problem 2, question 6: PathMNIST tissue classification, MLP against MobileNet.

The assignment's hyperparameters are the defaults (AdamW, lr 1e-3, weight decay
5e-4, batch 128, 15 epochs, seed 42); compare the two models without changing them:

    python main_classification.py --model mlp --logdir runs/mlp
    python main_classification.py --model mobilenet --logdir runs/mobilenet
    python plot_runs.py runs/mlp runs/mobilenet --out mlp_vs_mobilenet.png

PathMNIST comes through ``medmnist``: downloaded into ``--data_dir`` when the file is
missing, read from there otherwise. Writes ``LOGDIR/results.json`` (curves, test
loss/accuracy/AUC of the last and of the best-validation epoch, confusion matrix,
configuration, command, machine, versions, timings), ``curves.png`` and
``confusion.png``.
"""
import argparse
import copy
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch import optim
from tqdm import tqdm

from engine import (Timer, UserError, save_figure, autocast, autocast_dtype, default_num_workers, finished,
                    grad_scaler, load_training_state, pick_device, plot_curves, prepare_logdir, run_cli, run_record,
                    save_training_state, seed_everything, to_memory_format, write_json)
from mlp import MLP
from mobileNet import MobileNet

NUM_CLASSES = 9
ZENODO = "https://zenodo.org/records/10519652"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PathMNIST classification: MLP or MobileNet")
    parser.add_argument("--model", choices=["mlp", "mobilenet"], default="mlp",
                        help="which model to train (default: %(default)s)")
    parser.add_argument("--logdir", type=str, required=True, help="where to write the run's logs")
    parser.add_argument("--batch_size", type=int, default=128, help="batch size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=15, help="number of epochs (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    parser.add_argument("--weight_decay", type=float, default=5e-4, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--print_every", type=int, default=80,
                        help="print the loss every this many minibatches (default: %(default)s)")
    parser.add_argument("--data_dir", type=str, default="data", help="the medmnist root (default: %(default)s)")
    parser.add_argument("--size", type=int, choices=[28, 64, 128, 224], default=28,
                        help="MedMNIST+ image size (default: %(default)s)")
    parser.add_argument("--subset", type=int, default=0, metavar="N",
                        help="use at most N samples of each split (smoke runs, CPU experiments); 0 = all")
    parser.add_argument("--loss_on_probabilities", action="store_true",
                        help="the template's literal behaviour: cross-entropy on MobileNet's softmax output")
    parser.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                        help="mixed precision: auto = bf16 where the CPU or GPU does it natively")
    parser.add_argument("--plain", action="store_true", help="the template's execution: fp32, contiguous")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="data-loading processes (default: CPU cores - 1)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --logdir")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.epochs, args.print_every) < 1 or args.subset < 0:
        parser.error("--batch_size, --epochs and --print_every must be at least 1, --subset at least 0")
    return args


# ----------------------------------------------------------------------------- data

def _reachable(host="zenodo.org", port=443, timeout=3.0):
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_pathmnist(data_dir, size, subset, seed):
    """The three PathMNIST splits as (train, val, test) datasets with the template's
    transforms. Downloads only when the file is missing (medmnist would re-download a
    present file whose checksum differs); every failure is one clear line."""
    import medmnist
    from torchvision import transforms

    data_dir = Path(data_dir)
    filename = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
    path = data_dir / filename
    info = medmnist.INFO["pathmnist"]
    url = info["url" if size == 28 else f"url_{size}"]
    if not path.exists():
        if not _reachable():
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

class Scores(nn.Module):
    """What the loss sees: the pre-softmax scores, or with ``probabilities`` (the
    template's literal behaviour for MobileNet) the softmax output."""

    def __init__(self, model, probabilities=False):
        super().__init__()
        self.model, self.probabilities = model, probabilities

    def forward(self, x):
        if isinstance(self.model, MobileNet):
            return self.model(x) if self.probabilities else self.model.forward_logits(x)
        logits = self.model(x)
        return torch.softmax(logits, dim=1) if self.probabilities else logits


def train(epoch, model, loader, optimizer, scaler, criterion, device, args, amp_dtype, channels_last):
    """One epoch; returns (mean per-sample loss, accuracy, seconds)."""
    model.train()
    total_loss = correct = seen = 0
    start = time.perf_counter()
    for idx, (X, y) in enumerate(tqdm(loader, desc=f"epoch {epoch} train", leave=False, dynamic_ncols=True)):
        X = to_memory_format(X.to(device, non_blocking=True), channels_last)
        y = y.to(device, non_blocking=True).view(-1).long()
        with autocast(device, amp_dtype):
            scores = model(X)
        loss = criterion(scores.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        total_loss += loss.item() * len(y)
        correct += (scores.argmax(dim=1) == y).sum().item()
        seen += len(y)
        if idx % args.print_every == 0:
            tqdm.write(f"[TRAIN] Epoch: {epoch}, Iter: {idx}, Loss: {loss.item():.5f}")
    return total_loss / seen, correct / seen, time.perf_counter() - start


@torch.no_grad()
def test(model, loader, criterion, device, args, amp_dtype, channels_last):
    """Returns (mean per-sample loss, accuracy, class probabilities [N, 9], labels [N])."""
    model.eval()
    total_loss, probs, labels = 0.0, [], []
    for X, y in loader:
        X = to_memory_format(X.to(device, non_blocking=True), channels_last)
        y = y.to(device, non_blocking=True).view(-1).long()
        with autocast(device, amp_dtype):
            scores = model(X).float()
        total_loss += criterion(scores, y).item() * len(y)
        probs.append((scores if args.loss_on_probabilities else torch.softmax(scores, dim=1)).cpu())
        labels.append(y.cpu())
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    return total_loss / len(labels), float((probs.argmax(1) == labels).mean()), probs, labels


def test_metrics(loss, acc, probs, labels):
    from sklearn.metrics import confusion_matrix, roc_auc_score
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


def confusion_figure(matrix, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import medmnist
    names = [medmnist.INFO["pathmnist"]["label"][str(i)] for i in range(NUM_CLASSES)]
    m = np.asarray(matrix, dtype=float)
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(NUM_CLASSES), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(NUM_CLASSES), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    logdir = prepare_logdir(args.logdir, args.resume)
    if args.resume and finished(logdir):
        print(f"{logdir}: the run is already complete; nothing to do")
        return

    device = pick_device(args.device)
    amp_dtype = None if args.plain else autocast_dtype(device, args.amp)
    if args.model == "mobilenet" and device.type == "cpu" and args.amp == "auto":
        # Measured (bench.py): on a CPU, MobileNet's depthwise convolutions gain nothing from bf16
        # and oneDNN's bf16 kernels for them are slower; fp32 with channels_last is the fast path.
        amp_dtype = None
    channels_last = not args.plain and args.model == "mobilenet" and device.type != "mps"
    seed_everything(args.seed)
    torch.backends.cudnn.benchmark = True
    print(f"Using device: {device} (autocast: {amp_dtype}, channels_last: {channels_last})")

    train_set, val_set, test_set = load_pathmnist(args.data_dir, args.size, args.subset, args.seed)
    print(f"PathMNIST-{args.size}: train {len(train_set)}, val {len(val_set)}, test {len(test_set)}")
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    shuffle_rng = torch.Generator().manual_seed(args.seed)
    loader = lambda ds, shuffle: torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, shuffle=shuffle, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, generator=shuffle_rng if shuffle else None)
    train_loader, val_loader, test_loader = loader(train_set, True), loader(val_set, False), loader(test_set, False)

    if args.model == "mlp":
        model = MLP(3 * args.size * args.size, [1024, 512, 64, 64], NUM_CLASSES, activation="relu")
    else:
        model = MobileNet(NUM_CLASSES)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Initialized {args.model} with {n_params} parameters")
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = grad_scaler(device, amp_dtype)
    criterion = nn.CrossEntropyLoss()
    scores = Scores(model, args.loss_on_probabilities)
    forward_model = torch.compile(scores) if args.compile else scores

    history = {k: [] for k in ("train_losses", "valid_losses", "train_accs", "valid_accs", "train_times",
                               "valid_times")}
    start_epoch, best = 0, {"epoch": None, "acc": -1.0, "state": None}
    checkpoint_path = logdir / "checkpoint.pt"
    record = run_record(__file__, argv, args, device, "medmnist", "sklearn")
    training_state = {"model": model, "optimizer": optimizer, "scaler": scaler}
    if args.resume and checkpoint_path.exists():
        state = load_training_state(checkpoint_path, training_state, shuffle_rng)
        history, start_epoch, best = state["history"], state["epoch"] + 1, state["best"]
        record["resumed_at_epoch"] = start_epoch
        print(f"Resuming {logdir} at epoch {start_epoch}")

    wall_start = time.perf_counter()
    prior_seconds = sum(history["train_times"]) + sum(history["valid_times"])
    for epoch in tqdm(range(start_epoch, args.epochs), desc="epochs", initial=start_epoch, total=args.epochs,
                      dynamic_ncols=True):
        loss, acc, seconds = train(epoch, forward_model, train_loader, optimizer, scaler, criterion, device, args,
                                   amp_dtype, channels_last)
        with Timer() as timer:
            v_loss, v_acc, _, _ = test(forward_model, val_loader, criterion, device, args, amp_dtype, channels_last)
        for key, value in (("train_losses", loss), ("train_accs", acc), ("train_times", seconds),
                           ("valid_losses", v_loss), ("valid_accs", v_acc), ("valid_times", timer.seconds)):
            history[key].append(value)
        tqdm.write(f"=== Epoch {epoch}: train loss {loss:.4f} acc {acc:.4f} | val loss {v_loss:.4f} "
                   f"acc {v_acc:.4f} ({seconds:.0f}+{timer.seconds:.0f} s)")
        if v_acc > best["acc"]:
            best = {"epoch": epoch + 1, "acc": v_acc, "state": copy.deepcopy(model.state_dict())}
        if epoch + 1 < args.epochs:
            save_training_state(checkpoint_path, training_state, shuffle_rng, history=history, epoch=epoch, best=best)

    with Timer() as timer:
        last = test_metrics(*test(scores, test_loader, criterion, device, args, amp_dtype, channels_last))
        model.load_state_dict(best["state"])
        best_metrics = test_metrics(*test(scores, test_loader, criterion, device, args, amp_dtype, channels_last))
    print(f"Test (last epoch): loss {last['loss']:.4f}, accuracy {last['accuracy']:.4f}, AUC {last['auc']}")
    print(f"Test (best validation epoch {best['epoch']}): accuracy {best_metrics['accuracy']:.4f}")

    results = {
        **{k: history[k] for k in ("train_losses", "valid_losses", "train_accs", "valid_accs")},
        "test_loss": last["loss"], "test_acc": last["accuracy"], "test_auc": last["auc"],
        "confusion_matrix": last["confusion_matrix"],
        "best_epoch": best["epoch"], "best_valid_acc": best["acc"], "test_at_best_epoch": best_metrics,
        "n_parameters": n_params,
        "n_samples": {"train": len(train_set), "val": len(val_set), "test": len(test_set)},
        "timings": {"train_seconds_per_epoch": history["train_times"], "valid_seconds": history["valid_times"],
                    "test_seconds": timer.seconds, "total_seconds": prior_seconds + time.perf_counter() - wall_start},
        **record,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"Writing training logs to {logdir}...")
    plot_curves(history, logdir / "curves.png", title=f"{args.model} on PathMNIST-{args.size}")
    confusion_figure(last["confusion_matrix"], logdir / "confusion.png",
                     f"{args.model}: test confusion matrix (accuracy {last['accuracy']:.3f})")
    write_json(logdir / "results.json", results)
    checkpoint_path.unlink(missing_ok=True)


if __name__ == "__main__":
    run_cli(main)
