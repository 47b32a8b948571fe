"""One function per question of the assignment: each returns the numbers its section of
the report quotes and the claims its prose makes, ``{"numbers": {...}, "claims":
[(claim, holds), ...]}``. The prose lives in the ``.typ`` files, which receive only these
numbers and booleans; ``build.py`` stops when a claim no longer holds."""
import math

import numpy as np

from medimg import registry
from report.logs import (
    CONVOLUTION_METHODS,
    budget,
    code_version,
    copies,
    copy_names,
    dice,
    done,
    first_vessel_epoch,
    fmt,
    precision,
    predicts_vessels,
    setup_differences,
    trained_alike,
)
from report.stats import contrast_matrix, difference_interval


def _answer(numbers, claims=()):
    return {"numbers": numbers, "claims": list(claims)}


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
    records = conv["records"]
    timed = [r for r in records if r.get("seconds")]
    seconds = {(r["method"], r["image_size"], r["kernel_size"]): r["seconds"] for r in timed}
    kernels = conv["config"]["kernel_sizes"]
    big, kmax = conv["bars"]["image_size"], max(kernels)
    loop, correlate, convolve = "loop (definition)", "scipy correlate2d", "scipy convolve2d (flipped kernel)"
    ours, torch_conv = "ours (vectorised)", "torch conv2d (CPU)"
    # how each time was measured: the loop's from one call, the others' a median of several (the log's repeats)
    loop_repeats = {r["repeats"] for r in timed if r["method"] == loop}
    median_of = lambda rows: _span([r["repeats"] for r in rows if r["method"] != loop])
    # where another method beats ours: for each kernel, the largest image side at which it does
    beaten = [{"k": k, "side": max(sizes), "by": sorted({m for m, n, kk in seconds if kk == k and n in sizes and
                                                         m != ours and seconds[(m, n, k)] < seconds[(ours, n, k)]})}
              for k in kernels for sizes in [[n for (m, n, kk) in seconds if kk == k and m != ours and
                                              (ours, n, k) in seconds and seconds[(m, n, k)] < seconds[(ours, n, k)]]]
              if sizes]
    return _answer({
        "done": True, "size": big, "kmax": kmax, "cpu": conv["machine"]["cpu"], "agree": conv["all_methods_agree"],
        "ours_over_scipy": fmt(conv["bars"]["ours_over_scipy"], 2),
        "scipy_over_ours": fmt(1 / conv["bars"]["ours_over_scipy"], 1),
        "by_kernel": [{"k": k, "ratio": fmt(1 / v, 1)} for k, v in conv["bars"]["ours_over_scipy_by_kernel"].items()],
        # convolve2d on the flipped kernel against correlate2d: the same values, not quite the same time
        "convolve_over_correlate": [
            {"k": k, "ratio": fmt(seconds[(convolve, big, k)] / seconds[(correlate, big, k)], 2)}
            for k in kernels if (convolve, big, k) in seconds and (correlate, big, k) in seconds],
        "max_abs_diff": f"{max(r['max_abs_diff_vs_ours'] for r in timed):.1e}",
        "kernels": kernels,
        # each method as the logs name it, and a library call's own name with its note
        "table": [{"method": m, **dict(zip(("code", "note"), CONVOLUTION_METHODS.get(m, (None, "")))),
                   "ms": [fmt(1000 * seconds[(m, big, k)], 2) if seconds.get((m, big, k)) else "skipped"
                          for k in kernels]}
                  for m in dict.fromkeys(r["method"] for r in records)],
        "table_repeats": _span([r["repeats"] for r in timed if r["image_size"] == big and r["method"] != loop]),
        # the loop's time hardly grows with the kernel's taps: the cost is per pixel, not per multiply
        "loop_growth": {"taps": kmax ** 2 // 9, "ms_small": fmt(1000 * seconds[(loop, big, 3)], 0),
                        "ms_large": fmt(1000 * seconds[(loop, big, kmax)], 0),
                        "percent": f"{100 * (seconds[(loop, big, kmax)] / seconds[(loop, big, 3)] - 1):.0f}"}
        if (loop, big, 3) in seconds and (loop, big, kmax) in seconds else None,
        "torch_over_ours": [{"k": k, "ratio": fmt(seconds[(torch_conv, big, k)] / seconds[(ours, big, k)], 2)}
                            for k in kernels if (torch_conv, big, k) in seconds],
        # the loop against ours at the largest image, by kernel: the range the text quotes
        "loop_range": (lambda r: {"low": f"{min(r.values()):.0f}", "k_low": min(r, key=r.get),
                                  "high": f"{max(r.values()):.0f}", "k_high": max(r, key=r.get)})(
            {k: seconds[(loop, big, k)] / seconds[(ours, big, k)] for k in kernels
             if (loop, big, k) in seconds and (ours, big, k) in seconds}),
        "beaten": beaten,
        "figure_repeats": median_of(timed),  # a panel per kernel
        "blur_hf": fmt(100 * conv["blur"]["high_frequency_energy_ratio"], 1),
        "gaussian_size": conv["blur"]["gaussian_size"],
    }, [("the vectorised convolution agrees with SciPy and the loop", conv["all_methods_agree"]),
        ("each time of the loop is one timed call", loop_repeats == {1}),
        ("at the largest image our vectorised convolution is faster than every other method with every kernel",
         all(seconds[(ours, big, k)] < seconds[(m, big, k)] for (m, n, k) in seconds if n == big and m != ours)),
        ("at the largest image our vectorised convolution is faster than both SciPy functions with every kernel",
         all(seconds[("ours (vectorised)", big, k)] < min(seconds[(correlate, big, k)], seconds[(convolve, big, k)])
             for k in kernels)),
        ("the timings ran on one thread", conv["config"]["torch_threads"] == 1),
        ("where a method beats ours on a smaller image, it is PyTorch's conv2d",
         all(b["by"] == [torch_conv] for b in beaten))])


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
                                       "template": fmt(human["template_dice_of_a_perfect_prediction"]["mean"], 2)}


def problem_4_reference(runs, human=None):
    unet = runs["unet"]
    if not done(unet):
        return _answer({"done": False})
    c, b = unet["config"], budget(unet)
    cosine = runs.get("unet_cosine", {})  # the gpu profile only
    # its seeds are read together only where one code made them and trained them alike
    other = [k for k in copy_names(runs, "unet") if not trained_alike(runs[k], unet)]
    alike = {k: r for k, r in runs.items() if k not in other}
    n = {"done": True, "dice": fmt(dice(unet)), "epochs": c["epochs"], "budget": b, "seeds": over_seeds(alike, "unet"),
         "seeds_made_otherwise": other,
         "train_minutes": fmt(sum(unet["timings"]["train_seconds_per_epoch"]) / 60, 0),
         "sensitivity": fmt(unet["final_metrics"]["sensitivity"]), "auc": fmt(unet["final_metrics"]["auc"]),
         "vessel_percent": fmt(100 * unet["baselines"]["vessel_fraction"], 1), "human": human_numbers(human)}
    if done(cosine):
        n["cosine"] = {"dice": fmt(dice(cosine)), "epochs": cosine["config"]["epochs"],
                       "better": dice(cosine) > dice(unet), "budget": budget(cosine)}
    return _answer(n)


def over_seeds(runs, name):
    """One configuration over its seeds (the run and its ``_seedS`` copies): each run's final
    Dice, the mean and standard deviation where there are several, how many runs ever
    predicted vessels and how many end doing so (``end_state``), and the first epoch each
    predicted vessels."""
    rs = copies(runs, name)
    if not rs:
        return None
    values = [dice(r) for r in rs]
    first = [first_vessel_epoch(r) for r in rs]
    return {"name": name, "n": len(rs), "seeds": [r["config"]["seed"] for r in rs],
            "runs": ", ".join(fmt(v) for v in values), "mean": fmt(float(np.mean(values))),
            "sd": fmt(float(np.std(values, ddof=1))) if len(rs) > 1 else "–",
            "learned": sum(f is not None for f in first),
            "ends_with_vessels": sum(end_state(r) == "segments" for r in rs),
            "first_vessel_epoch": ", ".join(str(f) if f is not None else "never" for f in first),
            "sensitivity": fmt(float(np.mean([r["final_metrics"]["sensitivity"] for r in rs]))),
            "values": values}


def _problem_4_1_at_scale(gpu):
    """The assignment's scale (``gpu``'s runs), where both networks were made there: their
    numbers over seeds and the claims the text makes of them; ``(None, [])`` otherwise."""
    if gpu is None or not (done(gpu["unet"]) and done(gpu["unet_noskip"])):
        return None, []
    g = {name: over_seeds(gpu, name) for name in ("unet", "unet_noskip")}
    gu, gn = gpu["unet"], gpu["unet_noskip"]
    # the first epoch each seed-42 run predicts vessels; None where it never does
    fe = {name: first_vessel_epoch(gpu[name]) for name in ("unet", "unet_noskip")}
    # the text reads one pair of runs as such only where each network has one seed there
    numbers = {**g, "one_pair": g["unet"]["n"] == 1 and g["unet_noskip"]["n"] == 1}
    claims = [("at the assignment's scale the UNet without skips learns (Dice above 0.5)",
               all(v > 0.5 for v in g["unet_noskip"]["values"])),
              ("at the assignment's scale the UNet with skips scores higher than without",
               float(np.mean(g["unet"]["values"])) > float(np.mean(g["unet_noskip"]["values"]))),
              ("at the assignment's scale the UNet without skips leaves the plateau later",
               fe["unet"] is not None and (fe["unet_noskip"] is None or fe["unet_noskip"] > fe["unet"]))]
    # both networks scored alike (whole images, eval mode, threshold 0.5) on one copy of every
    # training eye and on the test images after the last epoch: how well each fits, how well it generalises
    fit = {name: gpu[name].get("train_whole_dice_thresholded") for name in ("unet", "unet_noskip")}
    if all(fit.values()):
        numbers["fit"] = {name: {"train": fmt(fit[name][-1]), "test": fmt(gpu[name]["valid_dice_thresholded"][-1]),
                                 "gap": _gap(fit[name][-1], gpu[name]["valid_dice_thresholded"][-1])}
                          for name in fit}
        claims += [("at the assignment's scale the UNet without skips finds fewer vessel pixels",
                    gn["final_metrics"]["sensitivity"] < gu["final_metrics"]["sensitivity"]),
                   ("at the assignment's scale the UNet without skips fits the training eyes better",
                    fit["unet_noskip"][-1] > fit["unet"][-1]),
                   ("at the assignment's scale the UNet without skips scores lower on the test images",
                    gn["valid_dice_thresholded"][-1] < gu["valid_dice_thresholded"][-1])]
    return numbers, claims


# How the comparisons of Problem 4 are stated: every configuration runs with the same seeds
# and is scored on the same test images, so two are compared image by image and seed by seed
# (report/stats.py); where each seed ends (segments, plateau, chance) is counted beside the
# difference, since a seed stuck on the plateau weighs in the mean like any other.

LEVEL = 0.95  # of every interval the text quotes


def _signed(x):
    return f"{x:+.3f}".replace("-", "−")


def _gap(a, b):
    """``a - b`` as the text prints it beside ``a`` and ``b`` rounded to three decimals: the
    difference of the rounded values, so that a reader's subtraction agrees."""
    return _signed(round(a, 3) - round(b, 3))


def by_seed(runs, name):
    """The finished runs of a configuration (the run and its ``_seedS`` copies), by seed."""
    return {runs[key]["config"]["seed"]: runs[key] for key in copy_names(runs, name)}


def difference(runs, terms, family=1):
    """A contrast between configurations, ``terms = {name: weight}`` (``{"a": 1, "b": -1}``:
    a minus b), as the text quotes it: the mean over test images and seeds of the per-image
    contrast of the thresholded test Dice, its interval at ``LEVEL`` (``stats.difference_interval``),
    and whether the interval holds zero (the runs cannot tell the two apart). The interval is
    clipped to the range the contrast can take (a difference of two Dice: -1 to 1). ``family``:
    how many such comparisons the question makes; ``told_apart_in_family`` says whether the
    interval at the Bonferroni level ``1 - (1 - LEVEL) / family`` excludes zero too."""
    D = contrast_matrix({n: (w, by_seed(runs, n)) for n, w in terms.items()})
    iv = difference_interval(D, LEVEL)
    wide = difference_interval(D, 1 - (1 - LEVEL) / family) if family > 1 else iv
    # each Dice lies in [0, 1], so the contrast lies between the sums of its negative and positive weights
    lowest, highest = sum(min(w, 0) for w in terms.values()), sum(max(w, 0) for w in terms.values())
    low, high = max(iv.low, lowest), min(iv.high, highest)
    return {"mean": _signed(iv.mean), "low": _signed(low), "high": _signed(high), "value": iv.mean,
            "holds_zero": iv.holds_zero, "half_width": (high - low) / 2, "reach": fmt(max(abs(low), abs(high))),
            "rule": iv.rule, "family": family, "family_level": f"{100 * (1 - (1 - LEVEL) / family):.4g}",
            "told_apart_in_family": not wide.holds_zero,
            # the interval at that level, clipped alike, where the text quotes it
            "family_low": _signed(max(wide.low, lowest)), "family_high": _signed(min(wide.high, highest))}


def end_state(run):
    """Where a finished run ends on the test images: ``segments`` (its final test Dice shows
    vessels, ``predicts_vessels``: above 0.05 and not what the constant all-vessel output scores
    there), else ``plateau`` (it ranks vessel pixels above background, pixel
    AUC of at least 0.6, but predicts none) or ``chance`` (AUC below 0.6: its output says
    little of where the vessels are)."""
    f = run["final_metrics"]
    if predicts_vessels(f["dice"], run.get("baselines", {}).get("all_vessel_dice")):
        return "segments"
    return "plateau" if f["auc"] is not None and f["auc"] >= 0.6 else "chance"


def arms(runs, names, reference, labels=None, family=None):
    """One row per configuration of a comparison: its seeds (``over_seeds``), mean AUC, how
    many seeds end in each ``end_state``, and its difference from ``reference``. ``labels``:
    what the table calls a configuration, where not the registry's label."""
    rows = []
    for name in names:
        row = {k: v for k, v in over_seeds(runs, name).items() if k != "values"}
        states = [end_state(r) for r in copies(runs, name)]
        row.update(label=(labels or {}).get(name) or registry.runs()[name].label,
                   auc=fmt(float(np.mean([r["final_metrics"]["auc"] for r in copies(runs, name)]))),
                   states={s: states.count(s) for s in ("segments", "plateau", "chance")},
                   test_loss=fmt(float(np.mean([r["final_metrics"]["loss"] for r in copies(runs, name)]))),
                   difference=None if name == reference else
                   difference(runs, {name: 1, reference: -1}, family=family or len(names) - 1))
        rows.append(row)
    return rows


def thin_vessels(runs, names, reference, family=1):
    """Each configuration's thin and thick vessels found (``tools/thin_vessels.py``: the recall
    of each on the test images, and the precision of all it marks), mean over its seeds; its
    difference in thin and in thick recall from ``reference``, as ``difference`` computes it on
    those per-image values instead of the Dice (``family`` as there), and ``kept_less``: whether it
    loses more of the thin vessels than of the thick ones (``share_kept_difference``). None unless
    every run of ``names`` was measured."""
    measured = {name: [r.get("thin_vessels") for r in copies(runs, name)] for name in names}
    if any(not m or None in m for m in measured.values()):
        return None

    def per_image(value):  # the runs as ``difference`` reads them, with value(image) in place of the Dice
        return {key: {**run, "final_metrics": {"per_image_dice": {
            image: value(v) for image, v in run["thin_vessels"]["per_image"].items()
            if v["thin_recall"] is not None and v["thick_recall"] is not None}}}  # images with both kinds
            for name in names for key, run in zip(copy_names(runs, name), copies(runs, name))}
    thin = per_image(lambda v: v["thin_recall"])
    thick = per_image(lambda v: v["thick_recall"])
    rows = {}
    for name in names:
        def mean(key):
            values = [m[key] for m in measured[name]]
            return "n/a" if None in values else fmt(float(np.mean(values)))
        rows[name] = {"thin": mean("thin_recall"), "thick": mean("thick_recall"), "precision": mean("precision"),
                      "difference": None if name == reference else
                      difference(thin, {name: 1, reference: -1}, family=family),
                      "thick_difference": None if name == reference else
                      difference(thick, {name: 1, reference: -1}, family=family),
                      "kept_less": None if name == reference else share_kept_difference(runs, name, reference)}
    first = measured[reference][0]
    return {"rows": rows, "share": f"{100 * first['thin_share']:.0f}",
            "size": f"{first['image_size']} px" if first["image_size"] else "full size"}


def share_kept_difference(runs, name, reference):
    """How much more of the thin vessels than of the thick ones ``name`` loses against
    ``reference``, as shares of what ``reference`` finds: per test image and seed (each seed's
    run against the reference's run of that seed), ``D[s, i] = thin_name / thin_reference -
    thick_name / thick_reference`` of the recalls (``tools/thin_vessels.py``), below zero where the
    thin vessels lose the larger share; its mean and interval by ``stats.difference_interval`` (the
    rule of every interval), not clipped. A share and not a difference of recalls: a network finds
    far fewer of the thin pixels than of the thick ones, so one worse by the same proportion
    everywhere loses more thick than thin recall. Images where the reference finds none
    of a kind in some seed are left out (``images``: how many are read)."""
    mine, theirs = by_seed(runs, name), by_seed(runs, reference)
    if sorted(mine) != sorted(theirs):
        raise ValueError(f"{name} has seeds {sorted(mine)}, {reference} {sorted(theirs)}: a paired contrast needs the same")
    seeds = sorted(mine)

    def recall(run, image, kind):
        return (run["thin_vessels"]["per_image"].get(image) or {}).get(f"{kind}_recall")
    images = sorted(image for image in theirs[seeds[0]]["thin_vessels"]["per_image"]
                    if all(recall(theirs[s], image, kind) and recall(mine[s], image, kind) is not None
                           for s in seeds for kind in ("thin", "thick")))
    share = {kind: np.array([[recall(mine[s], i, kind) / recall(theirs[s], i, kind) for i in images] for s in seeds])
             for kind in ("thin", "thick")}
    iv = difference_interval(share["thin"] - share["thick"], LEVEL)
    return {"mean": _signed(iv.mean), "low": _signed(iv.low), "high": _signed(iv.high), "value": iv.mean,
            "holds_zero": iv.holds_zero, "rule": iv.rule, "thin": fmt(float(share["thin"].mean())),
            "thick": fmt(float(share["thick"].mean())), "images": len(images)}


def by_image(runs, names, baseline, reference="unet", family=1):
    """How each configuration's gain over ``baseline`` varies over the test images: Spearman's
    rank correlation, over the images, between an image's gain (mean over seeds of its Dice minus
    the baseline's) and how well ``reference`` segments it (its Dice, mean over its seeds: runs
    trained apart from these, so that their noise is not shared). A negative correlation: the gain is
    largest where the reference does worst. Each with its interval at ``LEVEL`` and at the
    Bonferroni level of ``family`` comparisons, by Fisher's z with the standard error
    sqrt(1.06 / (n - 3)) of Fieller, Hartley and Pearson (1957) for a rank correlation over n images.
    None where the reference's runs are not made or were scored at another image size, or where a
    gain or the reference's Dice is the same on every image."""
    from scipy.stats import norm, rankdata
    ref = copies(runs, reference)
    size = lambda r: r["config"].get("image_size", 0)
    seeds = lambda name: sorted(r["config"]["seed"] for r in copies(runs, name))
    if not ref or any(size(r) != size(runs[baseline]) for r in ref) or \
            any(seeds(name) != seeds(baseline) for name in names):  # a gain is taken seed by seed
        return None
    mean_dice = lambda name: {i: float(np.mean([r["final_metrics"]["per_image_dice"][i] for r in copies(runs, name)]))
                              for i in runs[baseline]["final_metrics"]["per_image_dice"]}
    hardness = mean_dice(reference)
    images = sorted(hardness)
    base = mean_dice(baseline)
    n = len(images)
    if n <= 3 or np.ptp(list(hardness.values())) < 1e-12:
        return None  # the standard error needs four images at least; a correlation with a constant is not defined
    se = math.sqrt(1.06 / (n - 3))

    def interval(z, level):
        q = norm.ppf(1 - (1 - level) / 2)
        return math.tanh(z - q * se), math.tanh(z + q * se)
    rows = {}
    for name in names:
        if name == baseline:
            continue
        arm = mean_dice(name)
        gain = [arm[i] - base[i] for i in images]
        if np.ptp(gain) < 1e-12:
            return None
        rho = float(np.corrcoef(rankdata(gain), rankdata([hardness[i] for i in images]))[0, 1])
        z = math.atanh(max(min(rho, 0.999999), -0.999999))
        low, high = interval(z, LEVEL)
        wide = interval(z, 1 - (1 - LEVEL) / family)
        rows[name] = {"rho": _signed(rho), "low": _signed(low), "high": _signed(high), "value": rho,
                      "holds_zero": low <= 0 <= high, "told_apart_in_family": not wide[0] <= 0 <= wide[1]}
    return {"rows": rows, "images": n, "family_level": f"{100 * (1 - (1 - LEVEL) / family):.4g}"}


def _all_done(runs, names):
    return all(done(runs[name]) for name in names)


def problem_4_1(runs, gpu=None):
    """With and without skip connections: over seeds on the CPU, and at the assignment's scale
    (``gpu``), where the networks' fit of the training eyes is measured too."""
    at_scale, claims = _problem_4_1_at_scale(gpu)
    n = {"done": False, **({"gpu": at_scale} if at_scale else {})}
    # measured on a fixed training batch at initialisation: at the assignment's scale where it was
    source = gpu if gpu is not None and all(gpu[k].get("initial_gradient_norms") for k in ("unet", "unet_noskip")) \
        else runs
    if all(done(source[k]) and source[k].get("initial_gradient_norms") for k in ("unet", "unet_noskip")):
        n["grad_scale"] = "assignment" if source is gpu else "crops"
        grad, grad_claims = _initial_gradients({k: source[k]["initial_gradient_norms"] for k in ("unet", "unet_noskip")})
        n.update(grad)
        claims += grad_claims
    if not _all_done(runs, ("unet", "unet_noskip")):
        return _answer(n, claims)
    rows = arms(runs, ["unet", "unet_noskip"], "unet")
    first = {name: [first_vessel_epoch(r) for r in copies(runs, name)] for name in ("unet", "unet_noskip")}
    n.update(done=True, rows=rows, unet=rows[0], noskip=rows[1], difference=rows[1]["difference"],
             budget=budget(runs["unet_noskip"]), never=all(f is None for f in first["unet_noskip"]),
             with_all=None not in first["unet"],
             # every seed without skips predicts vessels later than every seed with them, or never
             later=None not in first["unet"] and all(f is None or f > max(first["unet"]) for f in first["unet_noskip"]))
    thin = thin_vessels(runs, ["unet", "unet_noskip"], "unet")
    if thin:
        n["thin"] = thin
    return _answer(n, claims)


def _initial_gradients(grads):
    """The numbers the text quotes of the gradient at initialisation, ``grads[name][block]``
    (name: ``unet``, ``unet_noskip``), and the claims it makes of them."""
    sizes = block_weights(grads)
    # the root mean square of one weight's gradient in a block: its norm over sqrt(count)
    rms = {name: {b: grads[name][b] / math.sqrt(sizes[name][b]) for b in grads[name]} for name in grads}
    first, last = "encoder_block1", "decoder_block4"
    numbers = {"grad": {
        "first": {k: f"{v[first]:.1e}" for k, v in grads.items()},
        "last": {k: f"{v[last]:.1e}" for k, v in grads.items()},
        "rms_first": {k: f"{v[first]:.0e}" for k, v in rms.items()},
        "orders_noskip": f"{math.log10(grads['unet_noskip'][last] / grads['unet_noskip'][first]):.0f}",
        "ratio": f"{math.log10(grads['unet'][first] / grads['unet_noskip'][first]):.0f}",
        "eps_damping": f"{rms['unet_noskip'][first] / 1e-8:.0e}"}}
    claims = [("without skips the first block's initial gradient is over ten times smaller",
               grads["unet"][first] > 10 * grads["unet_noskip"][first]),
              ("without skips the first encoder block gets a far smaller gradient than the last decoder block",
               grads["unet_noskip"][first] * 100 < grads["unet_noskip"][last]),
              ("without skips the first block's per-weight gradient is below Adam's epsilon", rms["unet_noskip"][first] < 1e-8),
              ("with skips the first block's per-weight gradient is above Adam's epsilon", rms["unet"][first] > 1e-8)]
    return numbers, claims


def block_weights(grads):
    """Each network's weight count per block, for the blocks of its gradient norms
    ``grads[name]`` (name: ``unet`` or ``unet_noskip``)."""
    from unet import UNet
    sizes = {}
    for name, blocks in grads.items():
        model = UNet(3, 1, skip_connections=name == "unet")
        sizes[name] = {block: sum(p.numel() for p in getattr(model, block).parameters()) for block in blocks}
    return sizes


def dead_by_depth(runs, name):
    """The mean share of dead ReLU channels (over the seeds and the block's ReLU layers) in the
    UNet's first encoder block, at full resolution, and in its three deepest encoder blocks."""
    def share(blocks):
        values = [v for r in copies(runs, name) if r.get("dead_relu_fraction")
                  for layer, v in r["dead_relu_fraction"]["per_layer"].items() if layer.split(".")[0] in blocks]
        return fmt(100 * float(np.mean(values)), 0) if values else "–"
    return {"lr": float(name[3:]), "first": share({"encoder_block1"}),
            "deep": share({"encoder_block3", "encoder_block4", "encoder_block5"})}


def levels_kept(run):
    """How many of the UNet's levels (with skip connections), counted from the top (full
    resolution), still pass the image to the output, judged by the ReLU layers dead in every
    channel (on the four test images of ``dead_relu_fraction``): the convolution after such a
    layer outputs only its bias, the same for every image. A dead layer in ``encoder_block j``
    keeps levels 1 to j - 1, one in ``decoder_block k`` (k = 1 at the bottom) keeps levels 1 to
    4 - k, whose skip connections join after it; 0: nothing of the image reaches the output
    (one value everywhere where the cut is in decoder block 4). None: no layer is dead in every
    channel."""
    blocks = [layer.split(".")[0] for layer in dead_layers(run)]
    kept = [int(block[-1]) - 1 if block.startswith("encoder") else 4 - int(block[-1])
            for block in blocks if block.startswith(("encoder_block", "decoder_block"))]
    return min(kept) if kept else None


def dead_layers(run, block=None):
    """The ReLU layers (of ``block``, or of the whole network) dead in every channel."""
    return [layer for layer, share in run["dead_relu_fraction"]["per_layer"].items()
            if share >= 1.0 and block in (None, layer.split(".")[0])] if run.get("dead_relu_fraction") else []


def _constant_cut(runs, names):
    """The seeds that output one value everywhere (an AUC of exactly 0.5) and have a ReLU layer
    of the top level (encoder block 1 or decoder block 4) dead in every channel: their count,
    their rates and those layers."""
    cut = [r for name in names for r in copies(runs, name) if levels_kept(r) == 0 and
           r["final_metrics"]["auc"] is not None and abs(r["final_metrics"]["auc"] - 0.5) < 1e-9]
    return {"k": len(cut), "lr": sorted({r["config"]["lr"] for r in cut}, reverse=True),
            "by_seed": [{"seed": r["config"]["seed"], "layers": [layer for block in ("encoder_block1", "decoder_block4")
                                                                 for layer in dead_layers(r, block)]} for r in cut]}


def problem_4_2(runs):
    """Adam at five learning rates over seeds: each rate against the best one, where each
    rate's seeds end (``end_state``), and what the training losses and dead units show."""
    names = registry.runs_of("4.2")
    if not _all_done(runs, names):
        return _answer({"done": False})
    best = max(names, key=lambda name: float(np.mean([dice(r) for r in copies(runs, name)])))
    rows = arms(runs, names, best)

    def exploded(run):  # an epoch's mean loss above 10, or a non-finite loss
        return run["diverged"] or max(run["train_losses"]) > 10

    for name, row in zip(names, rows):
        rs = copies(runs, name)
        largest = max(max(r["train_losses"]) for r in rs)
        dead = [r["dead_relu_fraction"]["overall"] for r in rs if r.get("dead_relu_fraction")]
        ends = [end_state(r) for r in rs]
        plateau = [r for r, end in zip(rs, ends) if end == "plateau"]
        at_chance = [r for r, end in zip(rs, ends) if end == "chance"]
        constant = [r for r in at_chance if r["final_metrics"]["auc"] is not None and abs(r["final_metrics"]["auc"] - 0.5) < 1e-9]
        row.update(lr=float(name[3:]), largest_loss=f"{largest:#.2g}" if largest < 1 else f"{largest:.2g}",
                   exploded=sum(map(exploded, rs)), dead=fmt(100 * float(np.mean(dead)), 0) if dead else "–",
                   # the seeds on the plateau: left there after an explosion, or never moved far enough
                   thrown=sum(map(exploded, plateau)), slow=sum(not exploded(r) for r in plateau),
                   # seeds at chance that had predicted vessels at some evaluation before
                   lost=sum(first_vessel_epoch(r) is not None for r in at_chance),
                   # seeds at chance whose output is one value everywhere: an AUC of exactly 0.5
                   constant=len(constant))
    # each regime: the rates with a seed in it, and how many of its seeds (with how far Adam's
    # steps, each of about the rate, reach in the budget)
    b = budget(runs[names[0]])
    steps = b["steps"]

    def counted(key):
        k = {r["lr"]: r[key] if key in r else r["states"][key] for r in rows}
        return [{"lr": r["lr"], "k": k[r["lr"]], "n": r["n"], "reach": f"{steps * r['lr']:.2g}", "test_loss": r["test_loss"]}
                for r in rows if k[r["lr"]]]

    top = rows[names.index(best)]
    chance = [r for r in rows if r["states"]["chance"] and r["dead"] != "–"]
    n = {"done": True, "rows": rows, "best": top["lr"], "best_row": top, "budget": b,
         "regimes": {key: counted(key) for key in ("exploded", "chance", "slow", "thrown", "segments", "lost")},
         "apart_from_best": [r["lr"] for r in rows if r["difference"] and r["difference"]["told_apart_in_family"]],
         # told apart at LEVEL alone, not once the question's comparisons are counted (Bonferroni)
         "apart_alone": [r for r in rows if r["difference"] and not r["difference"]["holds_zero"]
                         and not r["difference"]["told_apart_in_family"]],
         "family_level": rows[names.index(best) - 1 if names.index(best) else 1]["difference"]["family_level"],
         "family": _family(len(names) - 1),
         "constant": sum(r["constant"] for r in rows), "at_chance": sum(r["states"]["chance"] for r in rows),
         # the rate told apart from the best by the smallest difference, with its interval
         "closest": min((r for r in rows if r["difference"] and not r["difference"]["holds_zero"]),
                        key=lambda r: abs(r["difference"]["value"]), default=None),
         "untold_from_best": [r["lr"] for r in rows if r["difference"] and r["difference"]["holds_zero"]],
         # the best rate with most of its ReLU channels dead: dead channels are not what the rates differ by
         "best_mostly_dead": top["dead"] != "–" and float(top["dead"]) > 50,
         # the rates with a seed at chance have most ReLU channels dead, 10 points or more above the best rate
         "chance_dead_apart": bool(chance) and top["dead"] != "–" and
         all(float(r["dead"]) > 50 and float(r["dead"]) >= float(top["dead"]) + 10 for r in chance),
         # the best rate's seeds whose image reaches the output only through the top level
         # (decoder block 3 cut), and which of its layers is dead
         "top_level_only": {"k": sum(bool(dead_layers(r, "decoder_block3")) and levels_kept(r) == 1
                                     for r in copies(runs, best)), "n": top["n"],
                            "layers": sorted({layer for r in copies(runs, best) for layer in dead_layers(r, "decoder_block3")})},
         # the seeds whose output is one value everywhere with a whole ReLU layer of the top level dead
         "constant_cut": _constant_cut(runs, names),
         # where the dead channels of the segmenting rates are: the first encoder block against the three deepest
         "dead_by_depth": sorted((dead_by_depth(runs, name) for name, r in zip(names, rows) if r["states"]["segments"]),
                                 key=lambda d: -d["lr"])}
    # the sweep's rate that the reference UNet trains at: the two differ only in AdamW's weight
    # decay (the reference's evaluation of the training eyes draws no random number)
    ref = runs["unet"]
    same = next((r for r in rows if r["lr"] == ref["config"]["lr"]), None) if done(ref) else None
    # ... and only where they differ in nothing else: one version of the code, one setting (not
    # the reference on whole images beside the sweep on patches)
    if same is not None and (code_version(runs[same["name"]]) != code_version(ref) or
                             set(setup_differences(runs[same["name"]], ref)) - {"optimizer", "weight_decay"}):
        same = None
    if same is not None and ref["config"]["optimizer"] == "adamw":
        n["versus_reference"] = {"lr": same["lr"], "row": same, "reference": over_seeds(runs, "unet"),
                                 "weight_decay": ref["config"]["weight_decay"], "weight_decay_sci": f"{ref['config']['weight_decay']:.0e}",
                                 "shrink": f"{ref['config']['lr'] * ref['config']['weight_decay']:.0e}",
                                 "difference": difference(runs, {same["name"]: 1, "unet": -1})}
    return _answer(n)


def strategies():
    """Every augmentation strategy but ``none``, with its transforms in words, as the code builds them."""
    from medimg.strategies import STRATEGIES, describe
    return [{"name": name, "description": describe(name)} for name in STRATEGIES if name != "none"]


def problem_4_3(runs):
    """Every strategy over seeds against no augmentation: its difference with its interval,
    the seeds that ended on the plateau, the test loss (the same images for every strategy;
    the training losses are not: each is measured on its own augmented crops), and where the runs
    held eyes out, each strategy's Dice on its training eyes against the held-out eyes
    (``held_out_fit``) and whether it narrows no augmentation's gap."""
    every = registry.runs_of("4.3")
    may_wait = registry.LEFT_OUT_UNTIL_SEEDED["4.3"]
    if not _all_done(runs, [name for name in every if name not in may_wait]):
        return _answer({"done": False, "family": _family(len(every) - 1), "strategies": strategies()})
    names = [name for name in every if done(runs[name])]
    rows = arms(runs, names, "aug_none")
    for row in rows:
        row["strategy"] = row["name"][4:]
        row["fit"] = held_out_fit(copies(runs, row["name"]))
    held_out = all(row["fit"] is not None for row in rows)  # every arm scored its training and held-out eyes
    if held_out:
        # a strategy narrows the gap where its mean gap is below every seed's gap without augmentation,
        # compared as printed, so that the text never says a larger number is below a smaller
        printed = lambda x: float(x.replace("−", "-"))
        for row in rows[1:]:
            row["fit"]["narrows"] = printed(row["fit"]["gap"]) < printed(rows[0]["fit"]["gap_low"])
    ranking = sorted(rows, key=lambda r: -float(r["mean"]))  # by mean test Dice, no augmentation included
    told = [r for r in ranking if r["difference"] and not r["difference"]["holds_zero"]]
    # told apart once the question's comparisons are counted together (Bonferroni), as 4.2 and 4.4 do
    family = [r for r in told if r["difference"]["told_apart_in_family"]]
    n = {"done": True, "rows": rows, "none": rows[0], "ranking": ranking,
         "better": [r for r in family if r["difference"]["value"] > 0],
         "worse": [r for r in family if r["difference"]["value"] < 0],
         # told apart at LEVEL alone, not once the comparisons are counted together
         "apart_alone": [r for r in told if not r["difference"]["told_apart_in_family"]],
         "family_level": rows[1]["difference"]["family_level"] if len(rows) > 1 else None,
         "untold": [r["strategy"] for r in ranking if r["difference"] and r["difference"]["holds_zero"]],
         "budget": budget(runs["aug_none"]), "strategies": strategies(),
         # a strategy whose seeds are not all made yet (report.logs.comparable): named, not compared
         "left_out": [{"strategy": name[4:], "lacks": runs[name].get("lacking_seeds", [])}
                      for name in every if name not in names],
         "family": _family(len(names) - 1),
         # what three seeds can resolve: the intervals' half-widths, the largest spread of one
         # configuration's seeds, and the largest move of a run's Dice between its last two evaluations
         "widths": {"low": fmt(min(2 * r["difference"]["half_width"] for r in rows if r["difference"])),
                    "high": fmt(max(2 * r["difference"]["half_width"] for r in rows if r["difference"])),
                    "sd": max((r["sd"] for r in rows if r["sd"] != "–"), key=float, default=None)},
         "swing": _last_swing(runs, names)}
    thin = thin_vessels(runs, names, "aug_none", family=len(names) - 1)
    if thin:
        n["thin"] = thin
    images = by_image(runs, names, "aug_none", family=len(names) - 1)
    if images:
        n["by_image"] = images
    # is there overfitting to regularise? Where the runs held eyes out, no augmentation's own fit
    # of its training eyes against those eyes; else the reference UNet's training eyes (whole, as
    # the test eyes are evaluated) against the test eyes at the end, over its seeds
    claims = []
    if held_out:
        n["held_out_fit"] = rows[0]["fit"]
    else:
        fits = [(r["train_whole_dice_thresholded"][-1], r["valid_dice_thresholded"][-1])
                for r in copies(runs, "unet") if r.get("train_whole_dice_thresholded")]
        if fits:
            train, test = (float(np.mean(v)) for v in zip(*fits))
            n["fit"] = {"train": fmt(train), "test": fmt(test), "seeds": len(fits)}
            claims.append(("the reference UNet fits its training eyes no better than the test eyes", train - test < 0.02))
    return _answer(n, claims)


def held_out_fit(runs) -> dict | None:
    """How much better a configuration's runs fit their training eyes than the eyes held out from
    them, after the last epoch: each run's thresholded Dice per eye (one copy of each, whole,
    eval mode), averaged over its eyes, then over the runs; ``gap`` = training - held-out, with
    its smallest and largest value over the seeds. None where a run held no eye out."""
    pairs = []
    for r in runs:
        final = r["final_metrics"]
        if not final.get("per_image_dice_validation") or not final.get("per_image_dice_train_eyes"):
            return None
        pairs.append((float(np.mean(list(final["per_image_dice_train_eyes"].values()))),
                      float(np.mean(list(final["per_image_dice_validation"].values())))))
    if not pairs:
        return None
    train, held = (float(np.mean(v)) for v in zip(*pairs))
    gaps = [t - h for t, h in pairs]
    return {"train": fmt(train), "held_out": fmt(held), "gap": _gap(train, held), "value": train - held,
            "gap_low": _signed(min(gaps)), "gap_high": _signed(max(gaps)), "seeds": len(pairs)}


def _last_swing(runs, names):
    """The run of ``names`` (seed copies included) whose test Dice moved most between its last
    two evaluations, and by how much; None where no run was evaluated twice."""
    def move(r):
        return abs(r["valid_dice_thresholded"][-1] - r["valid_dice_thresholded"][-2])
    evaluated = [r for name in names for r in copies(runs, name) if len(r["valid_dice_thresholded"]) > 1]
    if not evaluated:
        return None
    r = max(evaluated, key=move)
    d, e = r["valid_dice_thresholded"], r["evaluated_epochs"]
    return {"by": fmt(move(r)), "strategy": r["config"]["augmentation"], "seed": r["config"]["seed"],
            "from": fmt(d[-2]), "to": fmt(d[-1]), "before": e[-2], "after": e[-1]}


def _family(k):
    """How often, with ``k`` comparisons each read at ``LEVEL``, chance
    alone puts at least one interval off zero (intervals taken as independent): about one
    time in ``one_in``."""
    return {"k": k, "one_in": round(1 / (1 - LEVEL ** k))}


SMP_LABELS = {"smp_pretrained": "pretrained, all eyes", "smp_scratch": "from scratch, all eyes",
              "smp_pretrained_quarter": "pretrained, a quarter of the eyes",
              "smp_scratch_quarter": "from scratch, a quarter of the eyes"}


def problem_4_4(runs):
    """The ImageNet-pretrained encoder against the same network from scratch, on all training
    eyes and on a quarter of them, over seeds: each pair's difference, whether the gap grows
    with less data (the interaction), and each initialisation's quarter against its full-data run."""
    full, quarter = ("smp_pretrained", "smp_scratch"), ("smp_pretrained_quarter", "smp_scratch_quarter")
    if not _all_done(runs, (*full, *quarter)):  # report.logs.comparable makes the four arms together
        return _answer({"done": False})
    pre = runs["smp_pretrained"]
    weights = pre["model_weights"]
    course = done(runs.get("unet", {}))  # the course UNet from scratch (registry.REFERENCES): same data, steps and seeds
    # the answer rests on one comparison, the pretrained network against its twin from scratch on
    # all the eyes; the others (a quarter of the eyes, the gains' difference, the data sizes, the
    # course UNet) are counted as one family of their own (Bonferroni)
    family = 4 + 2 * course
    n = dict(done=True, rows=arms(runs, full, "smp_scratch", SMP_LABELS, 1), budget=budget(pre),
             params_m=fmt(pre["n_parameters"] / 1e6, 1), source=weights["source"], sha256=weights["sha256"][:16],
             tensors=weights["tensors_loaded"], lr=pre["config"]["lr"], optimizer=pre["config"]["optimizer"])
    quarter_rows = arms(runs, quarter, "smp_scratch_quarter", SMP_LABELS, family)
    less_data = {name: difference(runs, {f"{name}_quarter": 1, name: -1}, family) for name in full}
    n.update(gain=n["rows"][0]["difference"], quarter={
        "rows": quarter_rows, "gain": quarter_rows[0]["difference"],
        "fundi": runs["smp_pretrained_quarter"]["n_train_fundi"], "all_fundi": pre["n_train_fundi"],
        # does pretraining gain more with a quarter of the eyes? (pq - sq) - (p - s)
        "gain_grows": difference(runs, {"smp_pretrained_quarter": 1, "smp_scratch_quarter": -1,
                                        "smp_pretrained": -1, "smp_scratch": 1}, family),
        # each initialisation with a quarter of the eyes against all of them
        "less_data": less_data, "higher_with_less": [k for k, d in less_data.items() if d["value"] > 0]})
    # the two over training: each arm's mean test Dice at each evaluation, over seeds
    shared = min(len(r["valid_dice_thresholded"]) for name in full for r in copies(runs, name))
    pre_curve, scratch_curve = (np.mean([r["valid_dice_thresholded"][:shared] for r in copies(runs, name)], axis=0)
                                for name in full)
    n["start"] = {"epoch": pre["evaluated_epochs"][0], "pretrained": fmt(pre_curve[0]),
                  "scratch": fmt(scratch_curve[0]), "ahead_throughout": bool(np.all(pre_curve > scratch_curve))}
    # how far each arm's seeds spread at each evaluation (sd over seeds), and what the seed draws
    sd_pre, sd_scratch = (np.std([r["valid_dice_thresholded"][:shared] for r in copies(runs, name)], axis=0, ddof=1)
                          for name in full)
    n["spread"] = {"pretrained": {"low": fmt(sd_pre.min()), "high": fmt(sd_pre.max())},
                   "scratch": {"low": fmt(sd_scratch.min()), "high": fmt(sd_scratch.max()),
                               "last": fmt(sd_scratch[-1]), "before": fmt(sd_scratch[-2]) if shared > 1 else None},
                   "below_throughout": bool(np.all(sd_pre < sd_scratch)),
                   "on": "held-out eyes" if pre.get("evaluated_on") == "validation" else "test images",
                   "seed_picks_eyes": bool(pre["config"].get("val_fraction")),
                   "seed_cuts_patches": bool(pre["config"].get("crop_size"))}
    if course:
        n["course"] = {"row": over_seeds(runs, "unet"),
                       # each run computes in what its network's step measured faster (medimg.execution)
                       "precision": {"course": sorted({precision(r) for r in copies(runs, "unet")}),
                                     "arms": sorted({precision(r) for name in full for r in copies(runs, name)})},
                       "pretrained": difference(runs, {"smp_pretrained": 1, "unet": -1}, family),
                       "scratch": difference(runs, {"smp_scratch": 1, "unet": -1}, family)}
    # which of the other comparisons leave zero at LEVEL, and which still do once counted together
    compared = [("pretrained against scratch with a quarter of the eyes", n["quarter"]["gain"]),
                ("the gain with a quarter of the eyes against the gain with all", n["quarter"]["gain_grows"]),
                *((f"{SMP_LABELS[name].split(',')[0]} with a quarter of the eyes against all", d)
                  for name, d in less_data.items()),
                *((("pretrained against the course UNet", n["course"]["pretrained"]),
                   ("from scratch against the course UNet", n["course"]["scratch"])) if course else ())]
    assert len(compared) == family
    n["multiplicity"] = {"k": family, "level": compared[0][1]["family_level"], "one_in": _family(family)["one_in"],
                         "kept": [what for what, d in compared if d["told_apart_in_family"]],
                         "lost": [{"what": what, "low": d["family_low"], "high": d["family_high"]}
                                  for what, d in compared if not d["holds_zero"] and not d["told_apart_in_family"]]}
    sds = [r["sd"] for r in (*n["rows"], *quarter_rows, *([n["course"]["row"]] if "course" in n else [])) if r["sd"] != "–"]
    n["seed_sd"] = max(sds, key=float) if sds else None
    # the assignment's encoder, whose ImageNet weights were out of reach: read only beside arms it was trained
    # alike with (one code, one setting), never a patch run beside whole images
    resnets = [r for r in copies(runs, "smp_resnet18_scratch")
               if any(trained_alike(r, other) for other in copies(runs, "smp_scratch"))]
    if resnets:
        resnets.sort(key=lambda r: r["config"]["seed"])
        same_seed = {name: [next((r for r in copies(runs, name) if r["config"]["seed"] == resnet["config"]["seed"]
                                  and trained_alike(r, resnet)), None) for resnet in resnets]
                     for name in ("unet", "smp_scratch")}
        found = {name: rs for name, rs in same_seed.items() if None not in rs}
        n["resnet18_scratch"] = {"seeds": [r["config"]["seed"] for r in resnets],
                                 "dice": [fmt(dice(r)) for r in resnets], "params_m": fmt(resnets[0]["n_parameters"] / 1e6, 1),
                                 "same_seed": {name: [fmt(dice(r)) for r in rs] for name, rs in found.items()},
                                 "above_both": len(found) == 2 and all(dice(resnet) > dice(rs[i]) for rs in found.values()
                                                                       for i, resnet in enumerate(resnets))}
    # where the gain lies: the thin and thick vessels each arm finds on all the eyes (tools/thin_vessels.py)
    thin = thin_vessels(runs, ["smp_scratch", "smp_pretrained"], "smp_scratch")
    if thin:
        n["thin"] = thin
    claims = [("every encoder tensor was loaded", weights["tensors_loaded"] == 240)]
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
    for name, run in known.items():
        if not run.problem.startswith("4") or not copies(runs, name):
            continue
        configurations.append({**over_seeds(runs, name), "problem": run.problem, "label": run.label})
        for key in copy_names(runs, name):
            r = runs[key]
            rows.append({"name": key, "problem": run.problem, "label": run.label, "dice": fmt(dice(r)),
                         "seed": r["config"]["seed"], "budget": budget(r),
                         "sensitivity": fmt(r["final_metrics"]["sensitivity"]),
                         "specificity": fmt(r["final_metrics"]["specificity"]), "auc": fmt(r["final_metrics"]["auc"]),
                         "epochs": r["epochs_completed"], "device": r["machine"].get("gpu") or r["machine"]["cpu"],
                         "minutes": fmt(r["timings"]["total_seconds"] / 60, 1), "date": r.get("started", "")[:10],
                         "command": r["command"]})
    # the runs launched by hand: do their configurations differ only in the network and in where and
    # how often they log (their commands may differ by options that repeat a default)
    by_hand = [runs[r["name"]]["config"] for r in rows if "experiments.py" not in r["command"]]
    differing = {k for config in by_hand for k in config if any(c.get(k) != config[k] for c in by_hand)}
    n = {"exists": bool(rows), "rows": rows, "configurations": configurations,
         "by_question": sorted({c["problem"] for c in configurations}),
         "by_hand_alike": len(by_hand) > 1 and differing <= {"model", "logdir", "print_every"}}
    unet = runs.get("unet", {})
    if done(unet) and unet.get("train_whole_dice_thresholded"):  # the overfitting question at that scale
        train, test = unet["train_whole_dice_thresholded"][-1], unet["valid_dice_thresholded"][-1]
        before = unet["valid_dice_thresholded"][:-5]  # the evaluations before the last five: none in a short run
        n["generalisation"] = {"train": fmt(train), "test": fmt(test), "gap": _gap(train, test),
                               "overfits": train - test > 0.05, "test_as_high": test >= train, "epochs": unet["epochs_completed"],
                               "budget": budget(unet), "still_improving": bool(before) and test > max(before)}
    return n


def problem_4_runs(runs):
    """Every finished Problem 4 run of the cpu plan, seed copies included."""
    return [r for name, run in registry.runs("cpu").items() if run.problem.startswith("4") for r in copies(runs, name)]


def cpu_runs_made(runs):
    """What the Problem 4 runs of the earlier CPU protocol (128-px patches) cost, from their logs:
    how many are finished (seed copies included), their hours in all (``timings.total_seconds``),
    the machines, thread counts and executions they record, and the commits that made them."""
    made = [r for r in problem_4_runs(runs) if r["config"].get("crop_size")]
    return {"n": len(made), "hours": fmt(sum(r["timings"]["total_seconds"] for r in made) / 3600, 1),
            "cpus": sorted({r["machine"]["cpu"] for r in made}),
            "threads": sorted({r["machine"].get("torch_threads") for r in made} - {None}),
            # each run's arithmetic, as its measured execution chose it (autocast None: float32)
            "precision": sorted({"bfloat16 autocast" if precision(r) == "bfloat16" else precision(r) for r in made}),
            "patch": registry.CPU_PATCH, "whole": whole_runs_made(runs),
            # the commits of the code that made them (short hashes, as each run recorded it)
            "commits": sorted({r["project_version"] for r in made})}


def whole_runs_made(runs):
    """What the Problem 4 runs on whole images cost so far, from their logs: for each kind of
    CPU and arithmetic (``machine``: ``cpu``, ``cpu_capability``; ``precision``) how many runs,
    and the shortest and longest ``timings.total_seconds`` among them, as recorded."""
    made = [r for r in problem_4_runs(runs) if not r["config"].get("crop_size")]

    def span(seconds):
        return f"{seconds / 60:.0f} minutes" if seconds < 5400 else f"{seconds / 3600:.1f} hours"
    kinds = {}
    for r in made:
        key = (r["machine"]["cpu"], r["machine"].get("cpu_capability") or "", precision(r))
        kinds.setdefault(key, []).append(r["timings"]["total_seconds"])
    return {"n": len(made), "hours": fmt(sum(sum(t) for t in kinds.values()) / 3600, 1),
            "kinds": [{"cpu": cpu.replace("(R)", "").replace(" Processor", ""), "capability": capability, "precision": arithmetic,
                       "n": len(t), "shortest": span(min(t)), "longest": span(max(t))}
                      for (cpu, capability, arithmetic), t in sorted(kinds.items())]}
