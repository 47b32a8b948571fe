"""One function per question of the assignment: each returns the numbers its section of
the report quotes and the claims its prose makes, ``{"numbers": {...}, "claims":
[(claim, holds), ...]}``. The prose lives in the ``.typ`` files, which receive only these
numbers and booleans; ``build.py`` stops when a claim no longer holds."""
import math

import numpy as np

from medimg import registry
from report.logs import (
    HUMAN_DICE,
    MEDMNIST_RESNET18_ACC,
    budget,
    collapsed,
    copies,
    copy_names,
    dice,
    dice_at,
    done,
    fmt,
)


def _answer(numbers, claims=()):
    return {"numbers": numbers, "claims": list(claims)}


def compare_epoch(runs):
    """The budget at which runs of different lengths are compared: the short runs' length."""
    short = [n for n in [*registry.runs_of("4.1"), *registry.runs_of("4.2"), *registry.runs_of("4.3")]
             if done(runs[n])]
    return min(runs[n]["config"]["epochs"] for n in short) if short else None


def _command(profile, name):
    script, arguments = registry.plan(profile, "data/retina", "data")[name]
    return " ".join(["python", script, *arguments, "--logdir", f"runs/{profile}/{name}"])


def _not_run(run):
    return {"status": "not run", "reason": run.get("reason", ""), "command": run.get("command", "")}


# ----------------------------------------------------------------------------- Problem 2

def problem_2_1(runs):
    conv = runs["convolution"]
    if not done(conv):
        return _answer({"done": False})
    seconds = {(r["method"], r["image_size"], r["kernel_size"]): r.get("seconds") for r in conv["records"]}
    big, kmax = conv["bars"]["image_size"], max(conv["config"]["kernel_sizes"])
    return _answer({
        "done": True, "size": big, "kmax": kmax, "cpu": conv["machine"]["cpu"], "agree": conv["all_methods_agree"],
        "ours_over_scipy": fmt(conv["bars"]["ours_over_scipy"], 2),
        "scipy_over_ours": fmt(1 / conv["bars"]["ours_over_scipy"], 1),
        "loop_over_ours": f"{conv['bars']['loop_over_ours']['ratio']:.0f}",
        "loop_size": conv["bars"]["loop_over_ours"]["image_size"],
        "by_kernel": [{"k": k, "ratio": fmt(1 / v, 1)} for k, v in conv["bars"]["ours_over_scipy_by_kernel"].items()],
        "table": [{"method": m, "ms": [fmt(1000 * seconds[(m, big, k)], 2) if seconds.get((m, big, k)) else "skipped"
                                       for k in (3, kmax)]}
                  for m in dict.fromkeys(r["method"] for r in conv["records"])],
        "blur_hf": fmt(100 * conv["blur"]["high_frequency_energy_ratio"], 1),
        "gaussian_size": conv["blur"]["gaussian_size"],
    }, [("the vectorised convolution agrees with SciPy and the loop", conv["all_methods_agree"])])


def problem_2_6(runs, profile):
    """PathMNIST: what ran, and if nothing did, the commands and the floor of the pitfall."""
    names = registry.runs_of("2.6", profile)
    rows = []
    for name in names:
        r = runs[name]
        rows.append({"name": name, "status": "done", "test_acc": fmt(r["test_acc"]), "test_auc": fmt(r["test_auc"]),
                     "best_epoch": r["best_epoch"], "best_test_acc": fmt(r["test_at_best_epoch"]["accuracy"]),
                     "minutes": fmt(r["timings"]["total_seconds"] / 60, 1)} if done(r)
                    else {"name": name, **_not_run(r), "command": _command(profile, name)})
    floor = math.log(1 + 8 / math.e)  # cross-entropy of a softmax of probabilities that are one-hot
    return _answer({"available": all(done(runs[n]) for n in names[:2]), "rows": rows,
                    "profile_arguments": " ".join(registry.PROFILES[profile]["classification"]) or "none",
                    "medmnist_acc": fmt(MEDMNIST_RESNET18_ACC), "probability_loss_floor": fmt(floor, 4)})


# ----------------------------------------------------------------------------- Problem 4

def problem_4_reference(runs):
    unet = runs["unet"]
    if not done(unet):
        return _answer({"done": False})
    c, b = unet["config"], budget(unet)
    cosine = runs["unet_cosine"]
    whole = unet.get("train_whole_soft_dice") or []
    n = {"done": True, "dice": fmt(dice(unet)), "epochs": c["epochs"], "budget": b,
         "train_minutes": fmt(sum(unet["timings"]["train_seconds_per_epoch"]) / 60, 1),
         "total_minutes": fmt(unet["timings"]["total_seconds"] / 60, 1), "cpu": unet["machine"]["cpu"],
         "threads": unet["machine"]["torch_threads"], "command": unet["command"],
         "peak_dice": fmt(max(unet["valid_dice_thresholded"])), "human_dice": fmt(HUMAN_DICE),
         "above_human": dice(unet) > HUMAN_DICE,
         "vessel_percent": _vessel_percent(runs),
         "has_whole_training_curve": bool(whole)}
    if whole:  # training eyes and test images measured alike: whole images, eval mode
        n["train_whole_soft"], n["test_soft"] = fmt(whole[-1]), fmt(unet["valid_accs"][-1])
        n["generalisation_gap"] = fmt(whole[-1] - unet["valid_accs"][-1])
        n["overfits"] = whole[-1] - unet["valid_accs"][-1] > 0.05
    if done(cosine):
        n["cosine"] = {"dice": fmt(dice(cosine)), "epochs": cosine["config"]["epochs"],
                       "better": dice(cosine) > dice(unet), "budget": budget(cosine)}
    return _answer(n)


def _vessel_percent(runs):
    """The test images' vessel fraction, from any run that measured it (they share the test set)."""
    fractions = [r["baselines"]["vessel_fraction"] for r in runs.values()
                 if done(r) and "vessel_fraction" in r.get("baselines", {})]
    return fmt(100 * fractions[0], 1) if fractions else None


def problem_4_1(runs):
    unet, noskip = runs["unet"], runs["unet_noskip"]
    if not (done(unet) and done(noskip)):
        return _answer({"done": False})
    E = compare_epoch(runs)
    n = {"done": True, "E": E, "budget": budget(noskip), "noskip_dice": fmt(dice(noskip)),
         "noskip_auc": fmt(noskip["final_metrics"]["auc"]), "unet_dice_at_E": fmt(dice_at(unet, E)),
         "noskip_collapsed": collapsed(noskip), "noskip_curve": [fmt(d) for d in noskip["valid_dice_thresholded"]],
         "noskip_epochs": noskip["evaluated_epochs"], "noskip_peak": fmt(max(noskip["valid_dice_thresholded"]))}
    if "baselines" in noskip:
        all_vessel = noskip["baselines"]["all_vessel_dice"]
        n["all_vessel_dice"] = fmt(all_vessel)
        # an evaluation that scores what "everything is vessel" scores: the network flipped its constant output
        n["noskip_hit_all_vessel"] = any(abs(d - all_vessel) < 0.02 for d in noskip["valid_dice_thresholded"])
    grads = {name: runs[name].get("initial_gradient_norms") for name in ("unet", "unet_noskip")}
    noskip_grads = grads["unet_noskip"]
    if noskip_grads:  # within the network without skips: the first encoder block against the last decoder block
        n["noskip_grad"] = {"first": f"{noskip_grads['encoder_block1']:.1e}",
                            "last": f"{noskip_grads['decoder_block4']:.1e}",
                            "orders": f"{math.log10(noskip_grads['decoder_block4'] / noskip_grads['encoder_block1']):.0f}"}
    if all(grads.values()):
        first = "encoder_block1"
        n["grad_first_block"] = {k: f"{v[first]:.1e}" for k, v in grads.items()}
        n["grad_ratio"] = f"{grads['unet'][first] / grads['unet_noskip'][first]:.0e}"
    # dead ReLUs after training, against the UNet with skips after the same epochs (aug_none)
    dead = {"unet": (runs["aug_none"] if done(runs["aug_none"]) else unet).get("dead_relu_fraction"),
            "unet_noskip": noskip.get("dead_relu_fraction")}
    if dead["unet_noskip"]:
        n["dead_percent"] = {k: fmt(100 * v["overall"], 1) if v else None for k, v in dead.items()}
        n["dead_distinguishes"] = bool(dead["unet"]) and dead["unet_noskip"]["overall"] > dead["unet"]["overall"] + 0.2
    claims = [("the UNet with skips beats the one without at the same epoch", dice_at(unet, E) > dice(noskip))]
    if all(grads.values()):
        claims.append(("without skips the first block's initial gradient is over ten times smaller",
                       grads["unet"]["encoder_block1"] > 10 * grads["unet_noskip"]["encoder_block1"]))
    if noskip_grads:
        claims.append(("without skips the first encoder block gets a far smaller gradient than the last decoder block",
                       noskip_grads["encoder_block1"] * 100 < noskip_grads["decoder_block4"]))
    return _answer(n, claims)


def problem_4_2(runs):
    names = registry.runs_of("4.2")
    if not all(done(runs[n]) for n in names):
        return _answer({"done": False})
    E = compare_epoch(runs)
    rows = []
    for name in names:
        r = runs[name]
        rows.append({"lr": name[3:], "dice": fmt(dice(r)), "auc": fmt(r["final_metrics"]["auc"]),
                     "first_loss": f"{r['train_losses'][0]:.3g}", "max_loss": f"{max(r['train_losses']):.3g}",
                     "last_loss": f"{r['train_losses'][-1]:.3g}", "collapsed": collapsed(r),
                     "diverged": max(r["train_losses"]) > 10,
                     # ReLU channels silent on every pixel of four test images after training
                     "dead": fmt(100 * r["dead_relu_fraction"]["overall"], 0) if r.get("dead_relu_fraction") else "–"})
    by = {r["lr"]: r for r in rows}
    healthy = runs["aug_none"].get("dead_relu_fraction") if done(runs["aug_none"]) else None
    for r in rows:  # more dead units than a network of the same budget that learns?
        r["dead_above_healthy"] = bool(healthy) and r["dead"] != "–" and float(r["dead"]) > 100 * healthy["overall"] + 10
    best = max(names, key=lambda n: dice(runs[n]))
    n = {"done": True, "E": E, "rows": rows, "by": by, "best": best[3:], "budget": budget(runs[names[0]]),
         "healthy_dead": fmt(100 * healthy["overall"], 0) if healthy else None}
    claims = [("lr 1e-1 diverges (training loss above 10)", by["1e-1"]["diverged"]),
              ("lr 1e-1 ends predicting no vessel", dice(runs["lr_1e-1"]) < 0.01),
              ("lr 1e-2 ends on the all-background output", by["1e-2"]["collapsed"]),
              ("lr 1e-3 is the best of the sweep", best == "lr_1e-3")]
    return _answer(n, claims)


def problem_4_3(runs, overfits=None):
    """Each strategy's test Dice over seeds against no augmentation. With seeds, the noise is
    the pooled seed-to-seed standard deviation ``s`` of these runs and a difference of means
    counts when it exceeds twice its standard error, ``2 s sqrt(1/n_a + 1/n_b)``; with one
    seed per strategy, the median change between consecutive evaluations of a run stands in."""
    names = [n for n in registry.runs_of("4.3") if n != "aug_none"]
    unet = runs["unet"]
    baseline_runs = copies(runs, "aug_none")
    if not (all(done(runs[n]) for n in names) and (baseline_runs or done(unet))):
        return _answer({"done": False})
    from medimg.retina import STRATEGIES, describe
    E = compare_epoch(runs)
    values = {n[4:]: [dice(r) for r in copies(runs, n)] for n in names}
    # no augmentation: its own runs, or (older profiles) the reference run after the same epochs
    values["none"] = [dice(r) for r in baseline_runs] or [dice_at(unet, E)]
    # how far training got: the training loss of the last of the E epochs, mean over seeds
    fitted = {n[4:]: float(np.mean([r["train_losses"][E - 1] for r in copies(runs, n)])) for n in names}
    fitted["none"] = float(np.mean([r["train_losses"][E - 1] for r in baseline_runs or [unet]]))
    seeded = [v for v in values.values() if len(v) > 1]
    if seeded:
        pooled = math.sqrt(sum(sum((x - np.mean(v)) ** 2 for x in v) for v in seeded)
                           / sum(len(v) - 1 for v in seeded))
        threshold = lambda v: 2 * pooled * math.sqrt(1 / len(v) + 1 / len(values["none"]))
        noise = {"kind": "seeds", "sd": fmt(pooled), "runs": sum(len(v) for v in seeded),
                 "configurations": len(seeded)}
    else:
        # how much one run's Dice moves between consecutive evaluations near the end
        swings = []
        for r in [unet, *(runs[n] for n in names)]:
            d, e = r["valid_dice_thresholded"], r["evaluated_epochs"]
            swings += [abs(d[i] - d[i - 1]) for i in range(1, len(d)) if e[i] <= E]
        median_swing = float(np.median(swings)) if swings else 0.0
        threshold = lambda v: median_swing
        noise = {"kind": "swings", "swing": fmt(median_swing)}
    none_mean = float(np.mean(values["none"]))
    rows = []
    for name in sorted(values, key=lambda k: -np.mean(values[k])):
        v = values[name]
        delta = float(np.mean(v)) - none_mean
        verdict = ("baseline" if name == "none" else "better" if delta > threshold(v)
                   else "worse" if -delta > threshold(v) else "within noise")
        rows.append({"name": name, "n": len(v), "dice": fmt(float(np.mean(v))),
                     "runs": ", ".join(fmt(x) for x in v), "spread": fmt(max(v) - min(v)) if len(v) > 1 else "–",
                     "delta": f"{delta:+.3f}" if name != "none" else "–",
                     "threshold": fmt(threshold(v)) if name != "none" else "–", "verdict": verdict,
                     "train_loss": fmt(fitted[name]),
                     "description": describe(name)})
    seeds = sorted({r["config"]["seed"] for n in ("aug_none", *names) for r in copies(runs, n)})
    # runs that ended without predicting a vessel pixel: still on the all-background plateau
    everything = [k for n in ("aug_none", *names) for k in copy_names(runs, n)]
    stalled = [k for k in everything if dice(runs[k]) < 0.01]
    return _answer({"done": True, "E": E, "none_dice": fmt(none_mean), "noise": noise, "rows": rows,
                    "seeds": seeds, "baseline_is_reference": not baseline_runs,
                    "stalled": stalled, "total_runs": len(everything),
                    "budget": budget(runs[names[0]]), "none_description": describe("none"),
                    "strategies": [{"name": s, "description": describe(s)} for s in STRATEGIES if s != "none"],
                    "better": [r["name"] for r in rows if r["verdict"] == "better"],
                    "worse": [r["name"] for r in rows if r["verdict"] == "worse"],
                    "worse_fit_slower": all(fitted[r["name"]] > fitted["none"] for r in rows if r["verdict"] == "worse"),
                    "overfit_measured": overfits is not None, "overfits": bool(overfits)})


def problem_4_4(runs, profile):
    pre, scratch = runs["smp_pretrained"], runs["smp_scratch"]
    unet = runs["unet"]
    if not (done(pre) and done(scratch)):
        return _answer({"done": False, "pretrained": _not_run(pre), "scratch": _not_run(scratch)})
    E = compare_epoch(runs)
    first = pre["evaluated_epochs"][0]
    weights = pre["model_weights"]
    n = {"done": True, "E": E, "budget": budget(pre), "first_epoch": first,
         "pretrained": fmt(dice(pre)), "scratch": fmt(dice(scratch)),
         "pretrained_first": fmt(dice_at(pre, first)), "scratch_first": fmt(dice_at(scratch, first)),
         "unet_at_E": fmt(dice_at(unet, E)) if done(unet) else "n/a",
         "encoder": weights["encoder"], "source": weights["source"], "sha256": weights["sha256"][:16],
         "tensors": weights["tensors_loaded"], "params_m": fmt(pre["n_parameters"] / 1e6, 1),
         "unet_params_m": fmt(unet["n_parameters"] / 1e6, 1) if done(unet) else "n/a",
         "seconds_per_epoch": fmt(np.mean(pre["timings"]["train_seconds_per_epoch"]), 0),
         "above_human": dice(pre) > HUMAN_DICE, "human_dice": fmt(HUMAN_DICE),
         "pretrained_better": dice(pre) > dice(scratch), "resnet18": {}}
    quarter = [runs[k] for k in ("smp_pretrained_quarter", "smp_scratch_quarter")]
    if all(done(r) for r in quarter):
        n["quarter"] = {"pretrained": fmt(dice(quarter[0])), "scratch": fmt(dice(quarter[1])),
                        "fundi": quarter[0]["n_train_fundi"], "all_fundi": pre["n_train_fundi"],
                        "gap": fmt(dice(quarter[0]) - dice(quarter[1])), "full_gap": fmt(dice(pre) - dice(scratch)),
                        "gap_grows": dice(quarter[0]) - dice(quarter[1]) > dice(pre) - dice(scratch)}
    for name in ("smp_resnet18_pretrained", "smp_resnet18_scratch"):
        r = runs[name]
        n["resnet18"][name] = {"status": "done", "dice": fmt(dice(r))} if done(r) else {
            **_not_run(r), "command": _command(profile, name)}
    claims = [("the pretrained encoder is ahead at the first evaluation", dice_at(pre, first) > dice_at(scratch, first)),
              ("every encoder tensor was loaded", weights["tensors_loaded"] == 240)]
    return _answer(n, claims)


def segmentation_table(runs):
    """Every segmentation run's final metrics, for the summary table."""
    E = compare_epoch(runs)
    rows = []
    for name, run in registry.runs().items():
        if run.script != "main_segmentation.py":
            continue
        r = runs[name]
        if not done(r):
            rows.append({"name": name, "problem": run.problem, **_not_run(r)})
            continue
        f, c = r["final_metrics"], r["config"]
        rows.append({"name": name, "problem": run.problem, "status": "done", "label": run.label,
                     "epochs": r["epochs_completed"], "diverged": r["diverged"], "dice": fmt(f["dice"]),
                     "dice_at_E": fmt(dice_at(r, E)), "sensitivity": fmt(f["sensitivity"]),
                     "specificity": fmt(f["specificity"]), "auc": fmt(f["auc"]), "lr": c["lr"]})
    return rows


def other_profile(runs, other):
    """The Problem 4 runs of the other profile (``runs/gpu`` beside ``runs/cpu``, or the
    reverse) that exist, with their budgets: the same questions at another scale. ``runs``:
    that profile's runs (``logs.load_runs``), or None where its folder does not exist."""
    if runs is None:
        return {"exists": False, "profile": other}
    rows, missing = [], []
    for name, run in registry.runs(other).items():
        r = runs[name]
        if not run.problem.startswith("4"):
            continue
        if not done(r):
            missing.append(name)
            continue
        b, m = budget(r), r["machine"]
        rows.append({"name": name, "problem": run.problem, "label": run.label, "dice": fmt(dice(r)),
                     "budget": b, "device": m.get("gpu") or m["cpu"],
                     "minutes": fmt(r["timings"]["total_seconds"] / 60, 1), "date": r.get("started", "")[:10]})
    n = {"exists": True, "profile": other, "rows": rows, "missing": missing, "folder": f"runs/{other}"}
    unet = runs["unet"]
    if done(unet) and unet.get("train_whole_soft_dice"):  # the overfitting question at that scale
        train, test = unet["train_whole_soft_dice"][-1], unet["valid_accs"][-1]
        n["generalisation"] = {"train": fmt(train), "test": fmt(test), "gap": fmt(train - test),
                               "overfits": train - test > 0.05, "epochs": unet["epochs_completed"],
                               "budget": budget(unet), "still_improving": test > max(unet["valid_accs"][:-5])}
    return n
