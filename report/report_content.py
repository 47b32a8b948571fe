"""The experiment-dependent part of the report: the numbers the text quotes, the
figures it shows, and the claims its discussion makes, each checked against the logs
by ``build.py``."""
import shutil

LR_RUNS = ["lr_1e-1", "lr_1e-2", "lr_1e-3", "lr_1e-4", "lr_1e-5"]
AUG_RUNS = ["aug_flip", "aug_affine", "aug_color", "aug_elastic", "aug_combined"]


def _done(run):
    return run.get("status") == "done"


def _final(runs, name):
    return runs[name]["final_metrics"]["dice"] if _done(runs[name]) else None


def compare_epoch(runs):
    """The budget at which runs of different lengths are compared: the short runs' length."""
    lengths = [runs[n]["config"]["epochs"] for n in ["unet_noskip", *LR_RUNS, *AUG_RUNS] if _done(runs[n])]
    return min(lengths) if lengths else None


def segmentation_numbers(runs, segmentation_rows, dice_at, fmt):
    epoch = compare_epoch(runs)
    rows = segmentation_rows(runs, epoch)
    n = {"seg_rows": rows, "compare_epoch": epoch, "seg": {}}
    for row in rows:
        n["seg"][row["name"].replace("-", "_")] = row
    unet = runs["unet"]
    if _done(unet):
        c = unet["config"]
        n["unet"] = {
            "dice": fmt(unet["final_metrics"]["dice"]), "epochs": c["epochs"],
            "dice_at_compare": fmt(dice_at(unet, epoch)) if epoch else "n/a",
            "train_minutes": fmt(sum(unet["timings"]["train_seconds_per_epoch"]) / 60, 1),
            "total_minutes": fmt(unet["timings"]["total_seconds"] / 60, 1),
            "crop": c["crop_size"], "batch": c["batch_size"], "crops_per_image": c["crops_per_image"],
            "lr": c["lr"], "eval_every": c["eval_every"], "cpu": unet["machine"]["cpu"],
            "threads": unet["machine"]["torch_threads"], "command": unet["command"],
            "seconds_per_epoch": fmt(sum(unet["timings"]["train_seconds_per_epoch"]) /
                                     len(unet["timings"]["train_seconds_per_epoch"]), 0),
            "steps_per_epoch": unet["n_train_images"] * c["crops_per_image"] // c["batch_size"],
            "best_epoch": unet["best_epoch"],
            "best_dice": fmt(max(unet["valid_dice_thresholded"])),
        }
    return n


def classification_numbers(runs, fmt):
    names = ["mlp", "mobilenet", "mobilenet_probs"]
    n = {"cls": {"available": all(_done(runs[k]) for k in names[:2]), "rows": []}}
    for name in names:
        r = runs[name]
        if _done(r):
            n["cls"]["rows"].append({"name": name, "status": "done", "test_acc": fmt(r["test_acc"]),
                                     "test_auc": fmt(r["test_auc"]), "test_loss": fmt(r["test_loss"]),
                                     "best_epoch": r["best_epoch"],
                                     "best_test_acc": fmt(r["test_at_best_epoch"]["accuracy"]),
                                     "minutes": fmt(r["timings"]["total_seconds"] / 60, 1),
                                     "command": r["command"]})
        else:
            n["cls"]["rows"].append({"name": name, "status": "not run", "reason": r.get("reason", ""),
                                     "command": r.get("command", "")})
    return n


def segmentation_figures(runs, root, figures, curves_figure):
    epoch = compare_epoch(runs)
    curves_figure(runs, ["unet", "unet_cosine"], ["constant lr (reference)", "cosine lr decay"],
                  figures / "reference.png", "The reference UNet, trained longer")
    curves_figure(runs, ["unet", "unet_noskip"], ["UNet (skip connections)", "UNet without skip connections"],
                  figures / "skip.png", "Problem 4.1: skip connections", up_to=epoch)
    curves_figure(runs, LR_RUNS, [f"Adam, lr {r[3:]}" for r in LR_RUNS], figures / "lr.png",
                  "Problem 4.2: Adam learning rate")
    curves_figure(runs, ["unet", *AUG_RUNS], ["none", "flip", "affine", "color", "elastic", "combined"],
                  figures / "augmentation_curves.png", "Problem 4.3: augmentation strategies", up_to=epoch)
    curves_figure(runs, ["unet", "smp_scratch", "smp_pretrained"],
                  ["our UNet (from scratch)", "smp ResNet-18 UNet, from scratch", "smp ResNet-18 UNet, ImageNet"],
                  figures / "smp.png", "Problem 4.4: pretrained encoder", up_to=epoch)
    for run, name in (("unet", "augmentations.png"), ("unet", "predictions.png")):
        if (root / run / name).exists():
            shutil.copyfile(root / run / name, figures / f"unet_{name}")


def claims(runs, dice_at):
    """(claim, holds) pairs: each sentence of the discussion that depends on a result."""
    return []
