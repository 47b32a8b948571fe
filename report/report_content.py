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
    E = compare_epoch(runs)
    out = []

    def claim(text, holds):
        out.append((text, bool(holds)))

    if _done(runs["unet"]) and _done(runs["unet_noskip"]):
        claim("without skip connections the UNet stays on the all-background solution",
              _collapsed(runs, "unet_noskip"))
        claim("with skip connections it has learnt by the same epoch", dice_at(runs["unet"], E) > 0.5)
    if _done(runs["unet"]) and _done(runs["unet_cosine"]):
        claim("the cosine run has fewer epochs than the constant-rate reference",
              runs["unet_cosine"]["config"]["epochs"] < runs["unet"]["config"]["epochs"])
    if all(_done(runs[n]) for n in LR_RUNS):
        claim("lr 1e-1 diverges (loss above 1e3 from the first epoch, no vessel predicted)",
              runs["lr_1e-1"]["train_losses"][0] > 1e3 and _dice(runs, "lr_1e-1") < 0.01)
        claim("lr 1e-2 collapses to the all-background output after a first-epoch loss spike",
              _collapsed(runs, "lr_1e-2") and runs["lr_1e-2"]["train_losses"][0] > 1e2)
        claim("lr 1e-3 is the best of the sweep",
              _dice(runs, "lr_1e-3") == max(_dice(runs, n) for n in LR_RUNS))
        claim("lr 1e-5 is below lr 1e-4", _dice(runs, "lr_1e-5") <= _dice(runs, "lr_1e-4"))
    if all(_done(runs[n]) for n in ["unet", "lr_1e-3", *AUG_RUNS]):
        unet = runs["unet"]
        claim("the reference UNet does not overfit: final test loss not above final training loss",
              unet["valid_losses"][-1] <= unet["train_losses"][-1])
        claim("the reference UNet does not overfit: final test soft Dice not below the training one",
              unet["valid_accs"][-1] >= unet["train_accs"][-1])
    if _done(runs["smp_scratch"]) and _done(runs["unet"]):
        claim("the smp UNet from scratch beats our UNet at the same epoch",
              _dice(runs, "smp_scratch") > dice_at(runs["unet"], E))
        claim("its second-epoch training loss is far below ours",
              runs["smp_scratch"]["train_losses"][1] < runs["unet"]["train_losses"][1] - 0.1)
        claim("it has fewer parameters and cheaper epochs",
              runs["smp_scratch"]["n_parameters"] < runs["unet"]["n_parameters"]
              and sum(runs["smp_scratch"]["timings"]["train_seconds_per_epoch"][:E])
              < sum(runs["unet"]["timings"]["train_seconds_per_epoch"][:E]))
    return out


# ----------------------------------------------------------------------------- the discussion

def _dice(runs, name):
    return runs[name]["final_metrics"]["dice"] if _done(runs[name]) else None


def _auc(runs, name):
    return runs[name]["final_metrics"]["auc"] if _done(runs[name]) else None


def _collapsed(runs, name):
    """Stuck on a constant, all-background output: no vessel pixel predicted, chance AUC."""
    f = runs[name]["final_metrics"]
    return f["dice"] < 0.01 and (f["auc"] is None or abs(f["auc"] - 0.5) < 0.1)


def discussion(runs, dice_at, fmt):
    E = compare_epoch(runs)
    d = {}
    # the reference and its cosine-decay twin
    if _done(runs["unet"]) and _done(runs["unet_cosine"]):
        ref, cos = runs["unet"], runs["unet_cosine"]
        gain = _dice(runs, "unet_cosine") - _dice(runs, "unet")
        fewer = ref["config"]["epochs"] - cos["config"]["epochs"]
        early = max(e for e in cos["evaluated_epochs"] if e in ref["evaluated_epochs"] and e <= 12)
        if gain > 0:
            d["cosine_sentence"] = (f"That is {fmt(gain)} above the constant-rate run, with {fewer} epochs fewer.")
        else:
            d["cosine_sentence"] = (
                f"That is {fmt(-gain)} below the {ref['config']['epochs']}-epoch constant-rate run: the decay did not "
                f"make up for {fewer} epochs fewer. Part of the reason is visible early on: by epoch {early} the "
                f"decaying run had a test Dice of {fmt(dice_at(cos, early))} against {fmt(dice_at(ref, early))}, because "
                f"it left the all-background plateau later, a matter of chance at this stage as the comparison of "
                f"Adam and AdamW in the learning-rate sweep shows.")
        best = max(("unet", "unet_cosine"), key=lambda n: _dice(runs, n))
        d["cosine_sentence"] += (f" The best Dice of this CPU budget is therefore {fmt(_dice(runs, best))} "
                                 f"(`{best}`), against {0.788:.3f} for DRIVE's second human observer.")
    else:
        d["cosine_sentence"] = ""

    rows = []
    for name in LR_RUNS:
        r = runs[name]
        if _done(r):
            rows.append({"lr": name[3:], "dice": fmt(_dice(runs, name)), "auc": fmt(_auc(runs, name)),
                         "first_loss": f"{r['train_losses'][0]:.3g}", "last_loss": f"{r['train_losses'][-1]:.3g}"})
        else:
            rows.append({"lr": name[3:], "dice": "not run", "auc": "", "first_loss": "", "last_loss": ""})
    d["lr_rows"] = rows
    if all(_done(runs[n]) for n in LR_RUNS):
        lr = {n: runs[n] for n in LR_RUNS}
        d["lr_text"] = (
            f"- *10#super[-1]: divergence.* The first Adam steps move every weight by about 0.1, far more "
            f"than the weights themselves: the activations blow up, the training loss reaches "
            f"{lr['lr_1e-1']['train_losses'][0]:.2g} in the first epoch and stays astronomically high (finite in "
            f"float32, so the run is not stopped), and the saturated network predicts no vessel (test Dice "
            f"{fmt(_dice(runs, 'lr_1e-1'))}). "
            f"\n- *10#super[-2]: collapse.* The first steps blow the loss up too (a mean of "
            f"{lr['lr_1e-2']['train_losses'][0]:.2g} over the first epoch); then the network settles on predicting "
            f"background everywhere (training loss {lr['lr_1e-2']['train_losses'][-1]:.3f}, AUC "
            f"{fmt(_auc(runs, 'lr_1e-2'))}, chance) and never leaves it: steps this large push the ReLUs of this "
            f"unnormalised network into the dead regime (zero output, zero gradient) before any vessel feature forms. "
            f"\n- *10#super[-3]: the best of the sweep*, test Dice {fmt(_dice(runs, 'lr_1e-3'))} after {E} epochs: large "
            f"enough steps to leave the all-background plateau within a few epochs, small enough to stay stable. "
            f"\n- *10#super[-4], the assignment's rate*: test Dice {fmt(_dice(runs, 'lr_1e-4'))} after {E} epochs. "
            f"{_slow_sentence(runs, 'lr_1e-4', fmt)} "
            f"\n- *10#super[-5]*: test Dice {fmt(_dice(runs, 'lr_1e-5'))}, ten times slower still. "
            f"{_slow_sentence(runs, 'lr_1e-5', fmt)}\n\n"
            f"The learning rate sets the size of each step: too large and training diverges or dies, too small and "
            f"the budget runs out before the network has learnt. With Adam the step is roughly the learning rate "
            f"itself whatever the gradient's scale, which is why the usable range is narrow and why 10#super[-3] "
            f"(Adam's default) is a good first choice; with a budget of 40 full-image epochs on a GPU, "
            f"10#super[-4] has time to converge too, and decaying the rate (above) helps at any budget.")
    else:
        d["lr_text"] = "Some runs of the sweep have not been made yet."
    d["aug_text"] = _augmentation_text(runs, dice_at, fmt, E)
    d["smp_text"] = _smp_text(runs, dice_at, fmt, E)
    return {"discussion": d}


def _slow_sentence(runs, name, fmt):
    r = runs[name]
    if _collapsed(runs, name):
        return (f"Within {r['config']['epochs']} epochs the network has not left the all-background plateau "
                f"(training loss {r['train_losses'][0]:.3f} to {r['train_losses'][-1]:.3f}): the steps are too small "
                f"for this budget, not wrong.")
    return (f"The network learns, but slowly: its training loss went from {r['train_losses'][0]:.3f} to "
            f"{r['train_losses'][-1]:.3f} and its pixel AUC reached {r['final_metrics']['auc']:.2f}, so it already "
            f"ranks vessel pixels above background, but few pixels cross the probability 0.5 yet; it needs a longer "
            f"budget.")


AUG_WHY = {
    "aug_flip": "random horizontal and vertical flips, which change nothing a vessel looks like; but the course's "
                "training set already holds a flipped, a mirrored and a rotated copy of every eye, so flips add "
                "little that is new",
    "aug_affine": "rotations, small shifts, zooms and shears, which mimic another eye position or camera distance; "
                  "the interpolation softens one-pixel vessels, and the black corners it brings in are new",
    "aug_color": "brightness, contrast, saturation and hue jitter and a light blur, which mimic the variation of "
                 "illumination and camera between patients, the main difference between fundus photographs; the "
                 "geometry, and so the mask, is untouched",
    "aug_elastic": "smooth random deformations, which bend vessels into other plausible shapes but also thicken or "
                   "thin them locally",
    "aug_combined": "flips, affine and colour together, the strongest regularisation of all",
}


def augmentation_noise(runs, dice_at):
    """Run-to-run noise at this budget: two runs that differ only in a negligible way (Adam, and
    AdamW whose decoupled weight decay of 5e-4 x lr is tiny), both at lr 1e-3."""
    E = compare_epoch(runs)
    return abs(_dice(runs, "lr_1e-3") - dice_at(runs["unet"], E))


def _augmentation_text(runs, dice_at, fmt, E):
    if not all(_done(runs[n]) for n in ["unet", "lr_1e-3", *AUG_RUNS]):
        return "Some augmentation runs have not been made yet."
    none = dice_at(runs["unet"], E)
    noise = augmentation_noise(runs, dice_at)
    ranked = sorted(AUG_RUNS, key=lambda n: -_dice(runs, n))
    verdict = {n: ("better" if _dice(runs, n) - none > noise else "worse" if none - _dice(runs, n) > noise
                   else "within noise") for n in AUG_RUNS}
    lines = [f"- `{n[4:]}` ({AUG_WHY[n]}): test Dice {fmt(_dice(runs, n))}, "
             f"{'+' if _dice(runs, n) >= none else '−'}{fmt(abs(_dice(runs, n) - none))} against no augmentation "
             f"({verdict[n]})." for n in ranked]
    unet = runs["unet"]
    end_train, end_test = unet["train_losses"][-1], unet["valid_losses"][-1]
    better = [n[4:] for n in ranked if verdict[n] == "better"]
    worse = [n[4:] for n in ranked if verdict[n] == "worse"]
    conclusion = (
        f"*How to read these numbers.* Each strategy was run once, for {E} epochs, against the no-augmentation "
        f"reference ({fmt(none)} after the same {E} epochs). How much two runs differ by chance here is measured by "
        f"a pair that is practically the same configuration: Adam at 10#super[-3] ({fmt(_dice(runs, 'lr_1e-3'))}) "
        f"and the reference's AdamW at 10#super[-3] ({fmt(none)}), {fmt(noise)} apart, because after {E} epochs each "
        f"run has only just left the all-background plateau, at a moment that varies from run to run. A difference "
        f"smaller than that is called within noise above.\n\n"
        f"*Conclusion.* " +
        (f"{', '.join(f'`{b}`' for b in better)} helped beyond the noise. " if better else
         "No strategy helped beyond the noise within this budget. ") +
        (f"{', '.join(f'`{w}`' for w in worse)} made the result worse: " if worse else "") +
        (f"an augmentation makes the training task harder and slows the fitting, which a {E}-epoch budget "
         f"cannot afford. " if worse else "") +
        f"The least costly, `{ranked[0][4:]}`, is the strategy that moves the training images least away from the "
        f"test images. " +
        f"The reason is that the reference network does not overfit yet: at the end of its "
        f"{unet['config']['epochs']} epochs its test loss on whole images ({end_test:.3f}) is still no higher than "
        f"its training loss on crops ({end_train:.3f}), and its test soft Dice ({unet['valid_accs'][-1]:.3f}) no lower "
        f"than its training one ({unet['train_accs'][-1]:.3f}), so there is no generalisation gap for augmentation "
        f"to close. Augmentation pays when "
        f"training is long enough to memorise the 20 training eyes (the assignment's 40 full-image epochs on a GPU "
        f"come closer), and the strategies that match the real variation between fundus photographs, illumination "
        f"and contrast (`color`) and small changes of pose (`flip`, mild `affine`), are the ones to expect to help "
        f"there; heavy geometric distortion (`elastic`, strong `affine`) changes the width and shape of vessels, the "
        f"very thing the network must measure, and is the riskiest.")
    return "\n".join(lines) + "\n\n" + conclusion


def _plain(text):
    """Text from a log, shown literally inside Typst markup."""
    for ch in "\\*_#$@<>`[]~":
        text = text.replace(ch, "\\" + ch)
    return text.replace("--", "-\u2060-")


def _smp_text(runs, dice_at, fmt, E):
    scratch, unet, pre = runs["smp_scratch"], runs["unet"], runs["smp_pretrained"]
    if not (_done(scratch) and _done(unet)):
        return "The runs of this section have not been made yet."
    per_epoch = lambda r: sum(r["timings"]["train_seconds_per_epoch"]) / len(r["timings"]["train_seconds_per_epoch"])
    if _done(pre):
        pretrained = (f"*Pretrained.* With the ImageNet weights the same network reaches {fmt(_dice(runs, 'smp_pretrained'))} "
                      f"after {E} epochs, against {fmt(_dice(runs, 'smp_scratch'))} from scratch. ")
    else:
        pretrained = (f"*Pretrained: not run here.* The ImageNet-pretrained run could not be made on the machine that "
                      f"built this report: {_plain(pre.get('reason', ''))}. With internet access (or with "
                      f"`--encoder_weights PATH` to torchvision's ResNet-18 weights) the command "
                      f"`{pre.get('command', '')}` fills it, and the table and figure above pick it up. ")
    return (
        pretrained +
        f"\n\n*The architecture alone.* What could be measured is the `segmentation-models-pytorch` UNet with a ResNet-18 "
        f"encoder trained from scratch, with the same data, budget and hyperparameters: it reaches a test Dice of "
        f"{fmt(_dice(runs, 'smp_scratch'))} after {E} epochs, against {fmt(dice_at(unet, E))} for our UNet after the "
        f"same {E} epochs, with {scratch['n_parameters'] / 1e6:.1f} million parameters instead of "
        f"{unet['n_parameters'] / 1e6:.1f} and {per_epoch(scratch):.0f} s per epoch instead of {per_epoch(unet):.0f}. "
        f"Its mean training loss over the second epoch is already {scratch['train_losses'][1]:.2f}, where our UNet's "
        f"is {unet['train_losses'][1]:.2f}, still on the all-background plateau it leaves only after several more "
        f"epochs: the ResNet "
        f"encoder's batch normalisation and residual connections keep activations and gradients well scaled from "
        f"the first step, which our unnormalised UNet lacks, and its encoder downsamples early (a stride-2 7×7 "
        f"convolution and a max-pool), so each step is cheaper. "
        f"\n\n*What pretraining changes.* A pretrained encoder starts from filters that already detect edges, lines and "
        f"textures, which is most of what vessel segmentation needs, so fine-tuning mostly has to learn the decoder "
        f"and adapt the encoder to fundus images. The expected effect, with only 20 training fundi, is faster "
        f"convergence and a better or equal final Dice, limited by the domain gap between natural photographs and "
        f"fundus images (ImageNet normalisation is applied to the inputs of both smp runs so that the only "
        f"difference is the weights). This report does not claim it: the run above will say.")
