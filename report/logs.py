"""The runs' logs as the report reads them: which runs exist (the registry in
``medimg/registry.py``, nothing else), their results, and the few helpers that turn them
into the numbers the text quotes."""
from pathlib import Path

from medimg import registry
from medimg.cli import UserError
from medimg.runfiles import read_json

HUMAN_BASELINE = "human_baseline.json"  # beside the profiles' folders: runs/human_baseline.json
THIN_VESSELS = "thin_vessels.json"  # in a run's folder, written by tools/thin_vessels.py


# the convolution log's method names as the report prints them: the code's own name (set in a
# monospaced font) and a note, for the methods that are library calls
CONVOLUTION_METHODS = {
    "scipy correlate2d": ("scipy.signal.correlate2d", ""),
    "scipy convolve2d (flipped kernel)": ("scipy.signal.convolve2d", "(flipped kernel)"),
    "torch conv2d (CPU)": ("torch.conv2d", "(CPU)"),
}


def load_runs(root, profile=None):
    """Every run of the registry, by name: ``{"status": "done", **results}``, or the
    not-run record (``status``, ``reason``, ``command``); and every finished copy of a run
    with another seed (``NAME_seedS``, from ``experiments.py --seeds``)."""
    root = Path(root)
    runs = {}
    for name in registry.runs(profile or profile_of(root)):
        runs[name] = _load(root / name)
        for copy in sorted(root.glob(f"{name}_seed*")):
            if (copy / "results.json").exists():
                runs[copy.name] = _load(copy)
    return runs


def copy_names(runs, name):
    """The names of the finished runs of ``name`` over seeds: itself, then its ``_seedS`` copies."""
    return [key for key, r in runs.items() if (key == name or key.startswith(f"{name}_seed")) and done(r)]


def copies(runs, name):
    """The finished runs of ``name`` over seeds (``copy_names``)."""
    return [runs[key] for key in copy_names(runs, name)]


def code_version(run):
    """What code made a finished run: its code fingerprint (the first 12 hex digits). For a run
    logged before fingerprints, the commit it recorded; where that says ``+changes`` (edits no
    commit holds), with its machine and the hour it started, since only runs of one session
    (one copy of the tree, as a GPU lease has) can be taken for one version; with no record at
    all, the run alone."""
    fingerprint = run.get("code_fingerprint")
    if fingerprint:
        return fingerprint["sha256"][:12]
    commit = run.get("project_version")
    if commit is None:
        return f"no recorded code ({Path(run.get('folder', '?')).name})"
    if commit.endswith("+changes"):
        return f"commit {commit} on {run.get('machine', {}).get('hostname')} at {run.get('started', '?')[:13]}h"
    return f"commit {commit}"


def mixed_code(runs, question):
    """None when every finished run of Problem ``question``'s comparison (its arms,
    ``registry.COMPARISONS``, and their seed copies) was made by one version of the code; else
    one line that says which runs were made by which."""
    made_by = {}
    for name in registry.COMPARISONS[question]:
        for key in copy_names(runs, name):
            made_by.setdefault(code_version(runs[key]), []).append(key)
    if len(made_by) <= 1:
        return None
    return f"{question} not compared: its runs were made by different code (" + \
        "; ".join(f"{', '.join(names)}: {version}" for version, names in made_by.items()) + \
        "); make them again with one version"


def lacking_seeds(runs, question, seeds):
    """The arms of Problem ``question``'s comparison not finished with every seed of ``seeds``:
    name -> the seeds it lacks."""
    lacking = {}
    for name in registry.COMPARISONS[question]:
        made = {runs[key]["config"]["seed"] for key in copy_names(runs, name)}
        if set(seeds) - made:
            lacking[name] = sorted(set(seeds) - made)
    return lacking


def _lacks(lacking):
    return "; ".join(f"{name} lacks seed {', '.join(map(str, s))}" for name, s in lacking.items())


def comparable(runs, question, seeds=(), say=print):
    """``runs`` as Problem ``question``'s answer may read them: as they are when every arm of its
    comparison is finished with every seed of ``seeds`` and one version of the code made all it
    reads; otherwise with the comparison's runs recorded as not made, the reason said once
    through ``say``. Arms made by different code are never compared. An arm of
    ``registry.LEFT_OUT_UNTIL_SEEDED`` that lacks seeds is left out alone (recorded as not made,
    with why), and the others are compared."""
    lacking = lacking_seeds(runs, question, seeds)
    left_out = {name: s for name, s in lacking.items() if name in registry.LEFT_OUT_UNTIL_SEEDED.get(question, ())}
    if left_out and len(left_out) == len(lacking):
        reason = f"left out of {question}'s comparison until its seeds are made: {_lacks(left_out)}"
        say(f"{question}: {', '.join(left_out)} {reason}")
        gone = {key for name in left_out for key in copy_names(runs, name)} | set(left_out)
        lacks = {key: s for name, s in left_out.items() for key in gone if key == name or key.startswith(f"{name}_seed")}
        runs = {key: ({"status": "not run", "reason": reason, "command": "", "lacking_seeds": lacks[key]}
                      if key in gone else run) for key, run in runs.items()}
        lacking = {}
    problem = mixed_code(runs, question) or (f"{question} not answered yet: {_lacks(lacking)}" if lacking else None)
    if problem is None:
        return _with_references(runs, question, say)
    say(problem)
    refused = {key for name in registry.COMPARISONS[question] for key in copy_names(runs, name)}
    return _not_made(runs, refused, problem)


# what a reference must share with the arms it is set against: everything but the network
SAME_SETUP = ("image_size", "crop_size", "crops_per_image", "val_fraction", "train_fraction", "epochs", "batch_size",
              "augmentation", "optimizer", "lr", "weight_decay", "lr_schedule", "final_weights")


def setup_differences(run, other):
    """The ``SAME_SETUP`` options whose values differ between two runs' configurations."""
    return [k for k in SAME_SETUP if run["config"].get(k) != other["config"].get(k)]


def trained_alike(run, other):
    """Whether two runs were made by one version of the code and trained alike (``SAME_SETUP``)."""
    return code_version(run) == code_version(other) and not setup_differences(run, other)


def _not_made(runs, keys, reason):
    """``runs`` with ``keys`` recorded as not made, for ``reason`` (the others as they are)."""
    return {key: ({"status": "not run", "reason": reason, "command": ""} if key in keys else run)
            for key, run in runs.items()}


def _with_references(runs, question, say):
    """``runs`` with each of ``registry.REFERENCES[question]`` kept where its runs have the seeds
    of the question's arms, were made by their code and trained as they were (``SAME_SETUP``,
    every seed), else recorded as not made (the reason said)."""
    first_arm = registry.COMPARISONS[question][0]
    arms_code = {code_version(runs[key]) for name in registry.COMPARISONS[question] for key in copy_names(runs, name)}
    for name in registry.REFERENCES.get(question, ()):
        keys = copy_names(runs, name)
        made = {runs[key]["config"]["seed"] for key in keys}
        arm_seeds = {runs[key]["config"]["seed"] for key in copy_names(runs, first_arm)}
        other = {code_version(runs[key]) for key in keys} - arms_code
        setup = sorted({k for key in keys for k in setup_differences(runs[key], runs[first_arm])})
        if made != arm_seeds or other or setup:  # a paired contrast needs the arms' seeds, no more, no fewer
            reason = (f"{name} has seeds {', '.join(map(str, sorted(made))) or 'none'}, its arms "
                      f"{', '.join(map(str, sorted(arm_seeds)))}" if made != arm_seeds else
                      f"{name} was made by other code than {question}'s arms" if other else
                      f"{name} was trained otherwise than {first_arm} ({', '.join(setup)})")
            say(f"{question}: not set against {name}: {reason}")
            runs = _not_made(runs, set(keys) | {name}, reason)
    return runs


def _load(folder):
    if (folder / "results.json").exists():
        run = {"status": "done", "folder": str(folder), **read_json(folder / "results.json")}
        if (folder / THIN_VESSELS).exists():  # measured after the run, from its saved predictions
            run["thin_vessels"] = read_json(folder / THIN_VESSELS)
        return run
    if (folder / "convolution_timings.json").exists():
        return {"status": "done", "folder": str(folder), **read_json(folder / "convolution_timings.json")}
    if (folder / "not_run.json").exists():
        return read_json(folder / "not_run.json")
    return {"status": "not run", "reason": "this run has not been made yet", "command": ""}


def profile_of(root):
    """The profile whose runs the folder ``root`` holds: its name (``runs/gpu``), else ``cpu``."""
    return Path(root).name if Path(root).name in registry.PROFILES else "cpu"


def done(run):
    return run.get("status") == "done"


def fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def dice(run):
    """The final thresholded test Dice of a finished run, else None."""
    return run["final_metrics"]["dice"] if done(run) else None


def human_baseline(root):
    """The second observer's Dice under the report's protocol (``report/human_baseline.py``),
    from the log beside the runs' folders, or None where it was not measured."""
    path = Path(root).parent / HUMAN_BASELINE
    return read_json(path) if path.exists() else None


def evaluation_all_vessel_dice(run):
    """What predicting every pixel a vessel scores on the images the run evaluates during
    training: its held-out eyes (a run with ``--val_fraction`` records it; each seed holds out
    its own eyes) or the test images; None where the run did not record it."""
    baselines = run.get("baselines", {})
    if run.get("evaluated_on") == "validation":  # never the test images' value for held-out eyes
        return baselines.get("evaluation_all_vessel_dice")
    return baselines.get("evaluation_all_vessel_dice", baselines.get("all_vessel_dice"))


def evaluated_on(runs) -> str:
    """What the runs' curves were evaluated on, as an axis or caption names it: "test" (the test
    images) or "held-out" (training eyes held out with ``--val_fraction``); a ValueError where
    they differ, since one axis cannot hold both."""
    kinds = {"held-out" if r.get("evaluated_on") == "validation" else "test" for r in runs}
    if len(kinds) > 1:
        raise ValueError("one figure mixes curves on the test images with curves on held-out eyes")
    return kinds.pop() if kinds else "test"


def setting(runs) -> dict | None:
    """How runs were trained and scored, as the protocol text states it: on whole images
    (``whole``, at ``size`` px) or on random ``patch``-px patches of the 512-px images, with
    ``held_out`` training eyes kept out to score generalisation; None for no runs, a UserError
    where that differs (one question, one setting). Its arms may train on different numbers of
    eyes (``train_eyes``, the distinct counts) for correspondingly many epochs, so the evaluation
    images are scored every ``eval_every`` epochs (the distinct values over the arms), which is
    every ``eval_steps`` training steps (older runs that lack the counts leave those lists short).
    ``precision``: the arithmetic the runs trained in (each its step's fastest on its CPU:
    float32, or bfloat16 autocast where the CPU has bf16 natively), and ``mixed_seeds`` the
    seeds whose runs differ in it, so that a paired difference there includes its effect."""
    found = {(r["config"].get("crop_size") or 0, r["config"].get("image_size") or 512,
              len(r["final_metrics"].get("per_image_dice_validation") or {})) for r in runs}
    if len(found) > 1:
        raise UserError(f"runs compared in one question were trained in different settings (patch, image "
                        f"size, eyes held out): {sorted(found)}; move the runs of one setting into the folder")
    if not found:
        return None
    patch, size, held_out = found.pop()

    def eval_steps(r):
        return (r["config"].get("eval_every") or 1) * steps_per_epoch(r)
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["config"]["seed"], set()).add(precision(r))
    return {"whole": not patch, "size": size, "patch": patch, "held_out": held_out,
            "precision": sorted(set().union(*by_seed.values())),
            "mixed_seeds": sorted(seed for seed, found in by_seed.items() if len(found) > 1),
            "train_eyes": sorted({r["n_train_fundi"] for r in runs if r.get("n_train_fundi")}),
            "eval_every": sorted({r["config"].get("eval_every") or 1 for r in runs}),
            "eval_steps": sorted({eval_steps(r) for r in runs if r.get("n_train_images")})}


def steps_per_epoch(run) -> int:
    """Training steps in one epoch of a run: its training images (times the patches cut from each,
    on patches) over the batch size, the last short batch dropped."""
    c = run["config"]
    crops = c.get("crops_per_image", 1) if c.get("crop_size") else 1
    return max(1, run["n_train_images"] * crops // c["batch_size"])


def predicts_vessels(dice, all_vessel=None, floor=0.05):
    """A thresholded Dice that shows vessels: above ``floor`` and not what the constant
    all-vessel output scores on the same images (``all_vessel``; None where unknown)."""
    return dice > floor and (all_vessel is None or abs(dice - all_vessel) > 0.02)


def first_vessel_epoch(run, all_vessel=None, floor=0.05):
    """The first evaluated epoch at which the run predicts vessels (``predicts_vessels``, against
    ``all_vessel``, by default the run's own ``evaluation_all_vessel_dice``). None when it never
    does: the run stayed on the all-background plateau."""
    all_vessel = evaluation_all_vessel_dice(run) if all_vessel is None else all_vessel
    for epoch, d in zip(run["evaluated_epochs"], run["valid_dice_thresholded"]):
        if predicts_vessels(d, all_vessel, floor):
            return epoch
    return None


def precision(run) -> str:
    """The arithmetic a run trained in: 'float32', or its autocast dtype ('bfloat16')."""
    dtype = (run.get("execution") or {}).get("autocast")
    if dtype is None and "execution" not in run:  # older runs: bf16 where the CPU had it natively
        dtype = "bfloat16" if run["machine"].get("cpu_bf16") and not run["config"].get("plain") else None
    return dtype or "float32"


def budget(run):
    """What a caption must say of a run's budget: image size, crops, epochs, steps, precision."""
    c = run["config"]
    images = run["n_train_images"]
    crops = c.get("crops_per_image", 1) if c.get("crop_size") else 1
    steps = max(1, images * crops // c["batch_size"])  # the loader drops the last partial batch
    what = (f"{c['crop_size']}-px crops of {images} images, {crops} per image per epoch" if c.get("crop_size")
            else f"whole {c.get('image_size') or 512}-px images, {images} of them")
    return {"what": what, "batch": c["batch_size"], "epochs": run["epochs_completed"],
            "steps": steps * run["epochs_completed"], "precision": precision(run),
            "lr": c["lr"], "optimizer": c["optimizer"]}
