"""One function per question of the assignment: each returns the numbers its section of
the report quotes and the claims its prose makes, ``{"numbers": {...}, "claims":
[(claim, holds), ...]}``. The prose lives in the ``.typ`` files, which receive only these
numbers and booleans; ``build.py`` stops when a claim no longer holds."""
import math

import numpy as np

from medimg import registry
from report.logs import (
    all_vessel_dice,
    budget,
    collapsed,
    copies,
    copy_names,
    dice,
    dice_at,
    done,
    first_vessel_epoch,
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

def _span(values):
    """A count or a range of counts as the text quotes it: 15, or 3 to 5."""
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low} to {high}"


def problem_2_1(runs):
    conv = runs["convolution"]
    if not done(conv):
        return _answer({"done": False})
    records = conv["records"]
    timed = [r for r in records if r.get("seconds")]
    seconds = {(r["method"], r["image_size"], r["kernel_size"]): r["seconds"] for r in timed}
    kernels = conv["config"]["kernel_sizes"]
    big, kmax = conv["bars"]["image_size"], max(kernels)
    loop, correlate, convolve = "loop (definition)", "scipy correlate2d", "scipy convolve2d (flipped kernel)"
    # how each time was measured: the loop's from one call, the others' a median of several (the log's repeats)
    loop_repeats = {r["repeats"] for r in timed if r["method"] == loop}
    median_of = lambda rows: _span([r["repeats"] for r in rows if r["method"] != loop])
    return _answer({
        "done": True, "size": big, "kmax": kmax, "cpu": conv["machine"]["cpu"], "agree": conv["all_methods_agree"],
        "ours_over_scipy": fmt(conv["bars"]["ours_over_scipy"], 2),
        "scipy_over_ours": fmt(1 / conv["bars"]["ours_over_scipy"], 1),
        "loop_over_ours": f"{conv['bars']['loop_over_ours']['ratio']:.0f}",
        "loop_size": conv["bars"]["loop_over_ours"]["image_size"],
        "by_kernel": [{"k": k, "ratio": fmt(1 / v, 1)} for k, v in conv["bars"]["ours_over_scipy_by_kernel"].items()],
        # convolve2d on the flipped kernel against correlate2d: the same values, not quite the same time
        "convolve_over_correlate": [
            {"k": k, "ratio": fmt(seconds[(convolve, big, k)] / seconds[(correlate, big, k)], 2)}
            for k in kernels if (convolve, big, k) in seconds and (correlate, big, k) in seconds],
        "max_abs_diff": f"{max(r['max_abs_diff_vs_ours'] for r in timed):.1e}",
        "table": [{"method": m, "ms": [fmt(1000 * seconds[(m, big, k)], 2) if seconds.get((m, big, k)) else "skipped"
                                       for k in (3, kmax)]}
                  for m in dict.fromkeys(r["method"] for r in records)],
        "table_repeats": [median_of([r for r in timed if r["image_size"] == big and r["kernel_size"] == k])
                          for k in (3, kmax)],
        "figure_repeats": median_of([r for r in timed if r["kernel_size"] in (min(kernels), kmax)]),  # the panels drawn
        "blur_hf": fmt(100 * conv["blur"]["high_frequency_energy_ratio"], 1),
        "gaussian_size": conv["blur"]["gaussian_size"],
    }, [("the vectorised convolution agrees with SciPy and the loop", conv["all_methods_agree"]),
        ("each time of the loop is one timed call", loop_repeats == {1}),
        ("at the largest image our vectorised convolution is faster than both SciPy functions with every kernel",
         all(seconds[("ours (vectorised)", big, k)] < min(seconds[(correlate, big, k)], seconds[(convolve, big, k)])
             for k in kernels)),
        ("the timings ran on one thread", conv["config"]["torch_threads"] == 1)])


def problem_2_6(runs, profile, arch):
    """PathMNIST: what ran; where nothing did, the commands that make the runs and what can be
    answered without the data (parameter counts, MobileNet's feature maps on 28x28 inputs, the
    loss floor of cross-entropy on probabilities)."""
    names = registry.runs_of("2.6", profile)
    rows = []
    for name in names:
        r = runs[name]
        if done(r):
            rows.append({"name": name, "test_acc": fmt(r["test_acc"]), "test_auc": fmt(r["test_auc"]),
                         "best_epoch": r["best_epoch"], "best_test_acc": fmt(r["test_at_best_epoch"]["accuracy"]),
                         "minutes": fmt(r["timings"]["total_seconds"] / 60, 1)})
    floor = math.log(1 + 8 / math.e)  # cross-entropy of a softmax of probabilities that are one-hot
    shapes = arch["mobilenet_shapes_28"]
    one_by_one = next(s["layer"] for s in shapes if s["shape"].endswith("×1×1"))
    inputs = arch["mobilenet_block_inputs_28"]
    n = {"available": all(done(runs[name]) for name in names[:2]), "rows": rows,
         # the assignment's hyperparameters: the scripts' defaults
         "commands": [_command("gpu", name).replace("runs/gpu/", "runs/") for name in names],
         "probability_loss_floor": fmt(floor, 4), "one_by_one_layer": one_by_one,
         "blocks": len(inputs), "tiny_blocks": sum(side <= 2 for side in inputs),
         "one_pixel_blocks": sum(side == 1 for side in inputs),
         "mlp_over_mobilenet": fmt(arch["mlp_params"] / arch["mobilenet_params_9"], 2)}
    before_pool = shapes[[s["layer"] for s in shapes].index("avgpool") - 1]
    return _answer(n, [("MobileNet's feature map is 1x1 before the pool on 28x28 inputs",
                        before_pool["shape"].endswith("×1×1"))])


# ----------------------------------------------------------------------------- Problem 4

def human_numbers(human):
    """The second observer's Dice under our protocol (``runs/human_baseline.json``), or None."""
    return None if human is None else {"dice": fmt(human["mean_dice"]), "sd": fmt(human["sd_dice"]),
                                       "min": fmt(human["min_dice"]), "max": fmt(human["max_dice"]),
                                       "n": human["n_images"], "value": human["mean_dice"],
                                       "resampling_exact": human.get("resampling_check", {}).get("pixels_differing") == 0,
                                       "template": fmt(human["template_dice_of_a_perfect_prediction"]["mean"], 2)
                                       if "template_dice_of_a_perfect_prediction" in human else None}


def problem_4_reference(runs, human=None):
    unet = runs["unet"]
    if not done(unet):
        return _answer({"done": False})
    c, b = unet["config"], budget(unet)
    cosine = runs.get("unet_cosine", {})  # the gpu profile only
    whole = unet.get("train_whole_soft_dice") or []
    n = {"done": True, "dice": fmt(dice(unet)), "epochs": c["epochs"], "budget": b, "seeds": over_seeds(runs, "unet"),
         "train_minutes": fmt(sum(unet["timings"]["train_seconds_per_epoch"]) / 60, 0),
         "total_minutes": fmt(unet["timings"]["total_seconds"] / 60, 0), "cpu": unet["machine"]["cpu"],
         "threads": unet["machine"]["torch_threads"], "command": unet["command"],
         "peak_dice": fmt(max(unet["valid_dice_thresholded"])),
         "sensitivity": fmt(unet["final_metrics"]["sensitivity"]), "auc": fmt(unet["final_metrics"]["auc"]),
         "vessel_percent": _vessel_percent(runs), "human": human_numbers(human),
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


def over_seeds(runs, name, all_vessel=None):
    """One configuration over its seeds (the run and its ``_seedS`` copies): each run's final
    Dice, the mean and standard deviation where there are several, how many runs ever
    predicted vessels and how many end doing so, and the first epoch each predicted vessels."""
    rs = copies(runs, name)
    if not rs:
        return None
    values = [dice(r) for r in rs]
    first = [first_vessel_epoch(r, all_vessel) for r in rs]
    return {"name": name, "n": len(rs), "seeds": [r["config"]["seed"] for r in rs],
            "runs": ", ".join(fmt(v) for v in values), "mean": fmt(float(np.mean(values))),
            "sd": fmt(float(np.std(values, ddof=1))) if len(rs) > 1 else "–",
            "learned": sum(f is not None for f in first), "ends_with_vessels": sum(v >= 0.01 for v in values),
            "first_vessel_epoch": ", ".join(str(f) if f is not None else "never" for f in first),
            "sensitivity": fmt(float(np.mean([r["final_metrics"]["sensitivity"] for r in rs]))),
            "values": values}


def _problem_4_1_at_scale(gpu):
    """The assignment's scale (``gpu``'s runs), where both networks were made there: their
    numbers over seeds and the claims the text makes of them; ``(None, [])`` otherwise."""
    if gpu is None or not (done(gpu["unet"]) and done(gpu["unet_noskip"])):
        return None, []
    av = all_vessel_dice(gpu)
    g = {name: over_seeds(gpu, name, av) for name in ("unet", "unet_noskip")}
    gu, gn = gpu["unet"], gpu["unet_noskip"]
    # the first epoch each seed-42 run predicts vessels; None where it never does
    fe = {name: first_vessel_epoch(gpu[name], av) for name in ("unet", "unet_noskip")}
    numbers = {**g, "budget": budget(gu), "device": gu["machine"].get("gpu") or gu["machine"]["cpu"],
               "epochs": gu["epochs_completed"],
               "noskip_peak": fmt(max(gn["valid_dice_thresholded"])),
               # how many epochs sooner the seed-42 UNet with skips first predicts vessels (None: one never does)
               "earlier": None if None in fe.values() else fe["unet_noskip"] - fe["unet"],
               "seconds": fmt(gu["timings"]["total_seconds"], 0)}
    claims = [("at the assignment's scale the UNet without skips learns (Dice above 0.5)",
               all(v > 0.5 for v in g["unet_noskip"]["values"])),
              ("at the assignment's scale the UNet with skips scores higher than without",
               float(np.mean(g["unet"]["values"])) > float(np.mean(g["unet_noskip"]["values"]))),
              ("at the assignment's scale the UNet without skips leaves the plateau later",
               fe["unet"] is not None and (fe["unet_noskip"] is None or fe["unet_noskip"] > fe["unet"]))]
    return numbers, claims


def problem_4_1(runs, gpu=None):
    unet, noskip = runs["unet"], runs["unet_noskip"]
    if not (done(unet) and done(noskip)):
        at_scale, claims = _problem_4_1_at_scale(gpu)  # the assignment's scale is read all the same
        return _answer({"done": False, **({"gpu": at_scale} if at_scale else {})}, claims)
    E = compare_epoch(runs)
    all_vessel = all_vessel_dice(runs)
    same_budget = runs["aug_none"] if done(runs["aug_none"]) else unet  # the UNet with skips, E epochs
    n = {"done": True, "E": E, "budget": budget(noskip), "noskip_dice": fmt(dice(noskip)),
         "noskip_auc": fmt(noskip["final_metrics"]["auc"]), "unet_dice_at_E": fmt(dice_at(unet, E)),
         "noskip_collapsed": collapsed(noskip), "noskip_curve": [fmt(d) for d in noskip["valid_dice_thresholded"]],
         "noskip_epochs": noskip["evaluated_epochs"], "all_vessel_dice": fmt(all_vessel),
         "noskip_hit_all_vessel": all_vessel is not None and any(abs(d - all_vessel) < 0.02
                                                                  for d in noskip["valid_dice_thresholded"]),
         # None where no run of the UNet with skips stopped at E epochs (aug_none): the text then cites unet at E
         "skip_seeds": over_seeds(runs, "aug_none", all_vessel), "noskip_learned": first_vessel_epoch(noskip, all_vessel)}
    claims = [("the UNet with skips beats the one without at the same epoch", dice_at(unet, E) > dice(noskip))]
    if n["skip_seeds"] is not None:
        claims.append(("every seed of the UNet with skips beats the one without at the same budget",
                       all(v > dice(noskip) for v in n["skip_seeds"]["values"])))
    at_scale, scale_claims = _problem_4_1_at_scale(gpu)
    if at_scale is not None:
        n["gpu"] = at_scale
        claims += scale_claims
    # measured on a fixed training batch at initialisation: at the assignment's scale where it was
    source = gpu if gpu is not None and all(gpu[k].get("initial_gradient_norms") for k in ("unet", "unet_noskip")) \
        else runs
    grads = {name: source[name].get("initial_gradient_norms") for name in ("unet", "unet_noskip")}
    n["grad_scale"] = "assignment" if source is gpu else "crops"
    if all(grads.values()):
        sizes = n["block_weights"] = block_weights(grads)  # the figure divides by them too
        # the root mean square of one weight's gradient in a block: its norm over sqrt(count)
        rms = {name: {b: grads[name][b] / math.sqrt(sizes[name][b]) for b in grads[name]} for name in grads}
        first, last = "encoder_block1", "decoder_block4"
        n["grad"] = {"first": {k: f"{v[first]:.1e}" for k, v in grads.items()},
                     "last": {k: f"{v[last]:.1e}" for k, v in grads.items()},
                     "rms_first": {k: f"{v[first]:.0e}" for k, v in rms.items()},
                     "orders_noskip": f"{math.log10(grads['unet_noskip'][last] / grads['unet_noskip'][first]):.0f}",
                     "ratio": f"{math.log10(grads['unet'][first] / grads['unet_noskip'][first]):.0f}",
                     "weights_first": sizes["unet_noskip"][first],
                     "eps_damping": f"{rms['unet_noskip'][first] / 1e-8:.0e}"}
        claims += [("without skips the first block's initial gradient is over ten times smaller",
                    grads["unet"][first] > 10 * grads["unet_noskip"][first]),
                   ("without skips the first encoder block gets a far smaller gradient than the last decoder block",
                    grads["unet_noskip"][first] * 100 < grads["unet_noskip"][last]),
                   # the text says the first block's per-weight gradient is below Adam's epsilon (1e-8)
                   ("without skips the first block's per-weight gradient is below Adam's epsilon",
                    rms["unet_noskip"][first] < 1e-8),
                   ("with skips the first block's per-weight gradient is above Adam's epsilon",
                    rms["unet"][first] > 1e-8)]
    dead = {"unet": same_budget.get("dead_relu_fraction"), "unet_noskip": noskip.get("dead_relu_fraction")}
    if dead["unet_noskip"] and dead["unet"]:
        n["dead_percent"] = {k: fmt(100 * v["overall"], 0) for k, v in dead.items()}
    return _answer(n, claims)


def block_weights(grads):
    """Each network's weight count per block, for the blocks of its gradient norms
    ``grads[name]`` (name: ``unet`` or ``unet_noskip``)."""
    from unet import UNet
    sizes = {}
    for name, blocks in grads.items():
        model = UNet(3, 1, skip_connections=name == "unet")
        sizes[name] = {block: sum(p.numel() for p in getattr(model, block).parameters()) for block in blocks}
    return sizes


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
    """Each strategy over its seeds against no augmentation. A run that never left the
    all-background plateau is a failure to learn within the budget, not a noisy Dice: each
    strategy first counts how many of its seeds ever predicted vessels and how many end doing
    so. A difference of means is then judged only between configurations whose every seed
    learned, against twice its standard error ``2 s sqrt(1/n_a + 1/n_b)``, ``s`` the pooled
    seed-to-seed standard deviation of those configurations (with several seeds)."""
    names = [n for n in registry.runs_of("4.3") if n != "aug_none"]
    baseline_runs = copies(runs, "aug_none")
    if not (all(done(runs[n]) for n in names) and baseline_runs):
        return _answer({"done": False})
    from medimg.retina import STRATEGIES, describe
    E = compare_epoch(runs)
    all_vessel = all_vessel_dice(runs)
    summary = {n[4:]: over_seeds(runs, n, all_vessel) for n in ["aug_none", *names]}  # none first
    # how far training got: the training loss of the last of the E epochs (of a run that stopped
    # sooner, diverged, its last epoch's), mean over seeds
    fitted = {n[4:]: float(np.mean([r["train_losses"][:E][-1] if r["train_losses"] else math.nan
                                    for r in copies(runs, n)])) for n in ["aug_none", *names]}
    sound = {k: v for k, v in summary.items() if v["ends_with_vessels"] == v["n"]}  # every seed learned
    seeded = [v["values"] for v in sound.values() if v["n"] > 1]
    pooled = (math.sqrt(sum(sum((x - np.mean(v)) ** 2 for x in v) for v in seeded) / sum(len(v) - 1 for v in seeded))
              if seeded else None)
    none = summary["none"]
    none_mean = float(np.mean(none["values"]))
    rows = []
    for name in ["none", *sorted((k for k in summary if k != "none"), key=lambda k: -np.mean(summary[k]["values"]))]:
        v = summary[name]
        delta = float(np.mean(v["values"])) - none_mean
        threshold = (2 * pooled * math.sqrt(1 / v["n"] + 1 / none["n"])) if pooled is not None else None
        if name == "none":
            verdict = "baseline"
        elif v["ends_with_vessels"] < v["n"]:
            verdict = f"ends without vessels in {v['n'] - v['ends_with_vessels']} of {v['n']}"
        elif name not in sound or "none" not in sound or threshold is None:
            verdict = "not comparable"
        else:
            verdict = "better" if delta > threshold else "worse" if -delta > threshold else "within noise"
        rows.append({**{k: x for k, x in v.items() if k != "values"}, "name": name, "dice": v["mean"],
                     "delta": f"{delta:+.3f}" if name != "none" else "–",
                     "threshold": fmt(threshold) if threshold is not None and name != "none" else "–",
                     "verdict": verdict, "train_loss": fmt(fitted[name]), "description": describe(name)})
    seeds = sorted({s for v in summary.values() for s in v["seeds"]})
    everything = [k for n in ("aug_none", *names) for k in copy_names(runs, n)]
    ended_without = [k for k in everything if dice(runs[k]) < 0.01]
    all_learned = list(sound)
    n = {"done": True, "E": E, "none_dice": fmt(none_mean), "rows": rows, "seeds": seeds,
         "pooled_sd": fmt(pooled) if pooled is not None else None,
         "ended_without": len(ended_without), "total_runs": len(everything),
         "all_learned": all_learned,
         "all_learned_seeded": [k for k in all_learned if summary[k]["n"] > 1], "never_learned": [k for k, v in summary.items() if v["learned"] == 0],
         "budget": budget(runs[names[0]]),
         "strategies": [{"name": s, "description": describe(s)} for s in STRATEGIES if s != "none"],
         "better": [r["name"] for r in rows if r["verdict"] == "better"],
         "worse": [r["name"] for r in rows if r["verdict"] == "worse"],
         "all_fit_slower": all(fitted[k] > fitted["none"] for k in fitted if k != "none"),
         "overfit_measured": overfits is not None, "overfits": bool(overfits)}
    claims = [("every augmented configuration ends the compared epochs with a higher training loss than none",
               n["all_fit_slower"])] if n["total_runs"] > len(summary) else []
    return _answer(n, claims)


def problem_4_4(runs, profile, human=None):
    pre, scratch = runs["smp_pretrained"], runs["smp_scratch"]
    unet = runs["unet"]
    if not (done(pre) and done(scratch)):
        return _answer({"done": False})
    E = compare_epoch(runs)
    first = pre["evaluated_epochs"][0]
    weights = pre["model_weights"]
    h = human_numbers(human)
    n = {"done": True, "E": E, "budget": budget(pre), "first_epoch": first,
         "pretrained": fmt(dice(pre)), "scratch": fmt(dice(scratch)),
         "pretrained_seeds": over_seeds(runs, "smp_pretrained"), "scratch_seeds": over_seeds(runs, "smp_scratch"),
         "pretrained_first": fmt(dice_at(pre, first)), "scratch_first": fmt(dice_at(scratch, first)),
         "unet_at_E": fmt(dice_at(unet, E)) if done(unet) else "n/a",
         "encoder": weights["encoder"], "source": weights["source"], "sha256": weights["sha256"][:16],
         "tensors": weights["tensors_loaded"], "params_m": fmt(pre["n_parameters"] / 1e6, 1),
         "unet_params_m": fmt(unet["n_parameters"] / 1e6, 1) if done(unet) else "n/a",
         "lr": pre["config"]["lr"], "optimizer": pre["config"]["optimizer"],
         "human": h, "pretrained_better": dice(pre) > dice(scratch), "resnet18": {}}
    if h:
        n["human_gap"] = fmt(dice(pre) - h["value"])
        n["above_human_by_more_than_sd"] = dice(pre) - human["mean_dice"] > human["sd_dice"]
    quarter = [runs[k] for k in ("smp_pretrained_quarter", "smp_scratch_quarter")]
    if all(done(r) for r in quarter):
        n["quarter"] = {"pretrained": fmt(dice(quarter[0])), "scratch": fmt(dice(quarter[1])),
                        "fundi": quarter[0]["n_train_fundi"], "all_fundi": pre["n_train_fundi"],
                        "gap": fmt(dice(quarter[0]) - dice(quarter[1])), "full_gap": fmt(dice(pre) - dice(scratch)),
                        "gap_grows": dice(quarter[0]) - dice(quarter[1]) > dice(pre) - dice(scratch),
                        "first": fmt(dice_at(quarter[0], first)), "scratch_first": fmt(dice_at(quarter[1], first))}
    for name in ("smp_resnet18_pretrained", "smp_resnet18_scratch"):
        r = runs[name]
        n["resnet18"][name] = {"done": True, "dice": fmt(dice(r))} if done(r) else {"done": False}
    n["resnet18_command"] = _command("gpu", "smp_resnet18_pretrained").replace("runs/gpu/", "runs/")
    claims = [("the pretrained encoder is ahead at the first evaluation", dice_at(pre, first) > dice_at(scratch, first)),
              ("every encoder tensor was loaded", weights["tensors_loaded"] == 240)]
    return _answer(n, claims)


def seeded(runs):
    """Which configurations were also run with other seeds, and with which."""
    base = sorted({k.split("_seed")[0] for k in runs if "_seed" in k and done(runs[k])})
    seeds = sorted({runs[k]["config"]["seed"] for k in runs if "_seed" in k and done(runs[k])})
    return {"configurations": base, "seeds": seeds}


def segmentation_table(runs):
    """Every finished segmentation run's final metrics (seed copies included), for the summary table."""
    known = registry.runs()
    rows = []
    for key, r in runs.items():
        base = known.get(key.split("_seed")[0])
        if base is None or base.script != "main_segmentation.py" or not done(r):
            continue
        f, c = r["final_metrics"], r["config"]
        rows.append({"name": key, "problem": base.problem, "status": "done", "label": base.label,
                     "seed": c["seed"], "epochs": r["epochs_completed"], "diverged": r["diverged"],
                     "dice": fmt(f["dice"]), "sensitivity": fmt(f["sensitivity"]),
                     "specificity": fmt(f["specificity"]), "auc": fmt(f["auc"]), "lr": c["lr"]})
    order = list(known)
    return sorted(rows, key=lambda row: (order.index(row["name"].split("_seed")[0]), row["name"]))


def assignment_scale(runs, profile="gpu"):
    """The runs made at the assignment's scale (``runs/gpu``: whole 512x512 images, batch 2, 40
    epochs, AdamW 1e-4 unless a question varies it), every seed copy included; for each
    configuration, its seeds (``over_seeds``); and the overfitting question on the reference
    UNet. ``runs``: that folder's runs (``logs.load_runs``), or None where it does not exist."""
    if runs is None:
        return {"exists": False, "rows": [], "configurations": []}
    known = registry.runs(profile)
    rows, configurations = [], []
    all_vessel = all_vessel_dice(runs)
    for name, run in known.items():
        if not run.problem.startswith("4") or not copies(runs, name):
            continue
        configurations.append({**over_seeds(runs, name, all_vessel), "problem": run.problem, "label": run.label})
        for key in copy_names(runs, name):
            r = runs[key]
            rows.append({"name": key, "problem": run.problem, "label": run.label, "dice": fmt(dice(r)),
                         "seed": r["config"]["seed"], "budget": budget(r),
                         "sensitivity": fmt(r["final_metrics"]["sensitivity"]), "auc": fmt(r["final_metrics"]["auc"]),
                         "device": r["machine"].get("gpu") or r["machine"]["cpu"],
                         "minutes": fmt(r["timings"]["total_seconds"] / 60, 1), "date": r.get("started", "")[:10],
                         "command": r["command"]})
    n = {"exists": bool(rows), "rows": rows, "configurations": configurations,
         "by_question": sorted({c["problem"] for c in configurations})}
    unet = runs.get("unet", {})
    if done(unet) and unet.get("train_whole_soft_dice"):  # the overfitting question at that scale
        train, test = unet["train_whole_soft_dice"][-1], unet["valid_accs"][-1]
        before = unet["valid_accs"][:-5]  # the evaluations before the last five: none in a short run
        n["generalisation"] = {"train": fmt(train), "test": fmt(test), "gap": fmt(train - test),
                               "overfits": train - test > 0.05, "epochs": unet["epochs_completed"],
                               "budget": budget(unet), "still_improving": bool(before) and test > max(before)}
    return n


def cpu_runs_made(runs):
    """What the Problem 4 runs on the CPU cost so far, from their logs: how many are finished
    (seed copies included), their hours in all (``timings.total_seconds``), and the machines,
    thread counts and executions they record."""
    made = [r for name, run in registry.runs("cpu").items() if run.problem.startswith("4")
            for r in copies(runs, name)]
    return {"n": len(made), "hours": fmt(sum(r["timings"]["total_seconds"] for r in made) / 3600, 1),
            "cpus": sorted({r["machine"]["cpu"] for r in made}),
            "threads": sorted({r["machine"].get("torch_threads") for r in made} - {None}),
            "autocast": sorted({str((r.get("execution") or {}).get("autocast")) for r in made}),
            "patch": registry.CPU_PATCH}
