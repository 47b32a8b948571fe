"""Every run of the report, by name, in two profiles:

- ``gpu``: the assignment's hyperparameters exactly (15 classification epochs, 40
  segmentation epochs on whole 512x512 images, the template's batch sizes).
- ``cpu``: the same hyperparameters (AdamW 1e-4, weight decay 5e-4, batch 2, 40 epochs,
  DiceCELoss, seeds 42-44), with one thing scaled so that two CPU cores can make them: a
  training step sees a random patch of each of its two images instead of the whole image
  (the size chosen by a pilot, ``tools/pilot.py``); evaluation stays on the whole test
  images. PathMNIST runs on a subset.

``runs(profile)`` is the only list of runs: ``experiments.py``, the report, the GPU
lease and the tests read it. A new experiment is one ``Run`` here, an answer in
``report/answers.py``, a figure in ``report/plots.py`` and its text in ``report/*.typ``."""
from dataclasses import dataclass

from medimg.strategies import STRATEGIES  # the augmentation strategies are the ones the code builds

LEARNING_RATES = ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5")
# The cpu profile's patch size, chosen by a pilot (python -m tools.pilot; runs/cpu/pilot/choice.json):
# the smallest of 128, 160, 192 and 256 px at which three seeds of the reference UNet leave the
# all-background plateau within 12 epochs. None did (two seeds of each, the same training loss per
# step at every size), so the smallest: the reference UNet's three seeds, made first, show whether
# it leaves within the 40 epochs.
CPU_PATCH = 128

PROFILES = {
    # The assignment's hyperparameters (the scripts' defaults), nothing scaled. Only the
    # reference UNet, whose figure answers the overfitting question, also evaluates the
    # training eyes on whole images (an evaluation's cost, not a hyperparameter).
    "gpu": {
        "classification": [],
        "segmentation": ["--train_eval", "never"],
        "reference_unet": ["--train_eval", "every"],
        "long_unet": ["--lr_schedule", "cosine"],
        "seeds": (),
        "convolution": [],
    },
    # Two CPU cores: the assignment's hyperparameters, 1600 steps of batch 2 as on the GPU, each
    # step on random CPU_PATCH-px patches of its images; the whole test images are evaluated every
    # fourth epoch (the training eyes too for the reference UNet). Classification: a subset.
    "cpu": {
        "classification": ["--subset", "20000", "--epochs", "5"],
        "segmentation": ["--crop_size", str(CPU_PATCH), "--eval_every", "4", "--train_eval", "never"],
        "reference_unet": ["--train_eval", "every"],
        "seeds": (43, 44),
        "convolution": [],
    },
}

@dataclass(frozen=True)
class Run:
    """One run of the report: the question it answers, its script, and its own arguments
    (which come after the profile's, so they override them)."""
    name: str
    problem: str
    script: str
    arguments: tuple = ()
    label: str = ""


def runs(profile="cpu"):
    """Every run of the report, in the order they are made. The only list of runs: the
    report, the SLURM array (through --list) and the tests read it."""
    p = PROFILES[profile]
    seg, cls = "main_segmentation.py", "main_classification.py"
    lite0 = ("--model", "smp_unet", "--encoder", "efficientnet-lite0")
    # a quarter of the training eyes, four times the crops of each: the same number of steps
    quarter = ("--train_fraction", "0.25", "--crops_per_image", str(4 * _crops_per_image(p)))
    runs = [
        Run("convolution", "2.1", "convolution.py", tuple(p["convolution"]), "convolution study"),
        Run("unet", "4", seg, ("--model", "unet", *p["reference_unet"]), "UNet (skip connections)"),
        Run("unet_noskip", "4.1", seg, ("--model", "unet_noskip"), "UNet without skip connections"),
        *[Run(f"lr_{lr}", "4.2", seg, ("--model", "unet", "--optimizer", "adam", "--lr", lr), f"Adam, lr {lr}")
          for lr in LEARNING_RATES],
        # aug_none is the comparison's own baseline (the same length as the others, seeds alike);
        # the elastic run also draws the examples of every strategy (--show_augmentations)
        *[Run(f"aug_{name}", "4.3", seg, ("--model", "unet", "--augmentation", name,
                                          *(("--show_augmentations", "4") if name == "elastic" else ())), name)
          for name in STRATEGIES],
        Run("smp_pretrained", "4.4", seg, (*lite0, "--encoder_weights", "imagenet"),
            "smp EfficientNet-Lite0 UNet, ImageNet encoder"),
        Run("smp_scratch", "4.4", seg, (*lite0, "--encoder_weights", "none"),
            "smp EfficientNet-Lite0 UNet, from scratch"),
        Run("smp_pretrained_quarter", "4.4", seg, (*lite0, "--encoder_weights", "imagenet", *quarter),
            "ImageNet encoder, a quarter of the eyes"),
        Run("smp_scratch_quarter", "4.4", seg, (*lite0, "--encoder_weights", "none", *quarter),
            "from scratch, a quarter of the eyes"),
        # the assignment's suggestion, where its ImageNet weights can be downloaded
        Run("smp_resnet18_pretrained", "4.4", seg, ("--model", "smp_unet", "--encoder", "resnet18",
                                                    "--encoder_weights", "imagenet"),
            "smp ResNet-18 UNet, ImageNet encoder"),
        Run("smp_resnet18_scratch", "4.4", seg, ("--model", "smp_unet", "--encoder", "resnet18",
                                                 "--encoder_weights", "none"),
            "smp ResNet-18 UNet, from scratch"),
        # the reference UNet with a cosine learning-rate decay (gpu profile)
        *([Run("unet_cosine", "4", seg, ("--model", "unet", *p["long_unet"]), "UNet, cosine lr decay")]
          if "long_unet" in p else []),
        Run("mlp", "2.6", cls, ("--model", "mlp"), "MLP"),
        Run("mobilenet", "2.6", cls, ("--model", "mobilenet"), "MobileNet"),
        # the template's literal behaviour: cross-entropy on MobileNet's softmax probabilities
        Run("mobilenet_probs", "2.6", cls, ("--model", "mobilenet", "--loss_on_probabilities"),
            "MobileNet, loss on probabilities"),
    ]
    if profile == "gpu":  # the recipe candidates need the assignment's scale (a GPU)
        runs += [Run(f"recipe_{aug}", "4", seg, (*lite0, "--encoder_weights", "imagenet", *RECIPE, "--augmentation", aug),
                     f"recipe: ImageNet encoder, {aug} augmentation, cosine lr, 80 epochs")
                 for aug in RECIPE_AUGMENTATIONS]
    return {run.name: run for run in runs}


# The best-recipe candidates (gpu profile): the pretrained EfficientNet-Lite0 UNet, augmentation,
# a rate decaying from 3e-4 and twice the epochs, trained on 80% of the training eyes. The other
# 20% (held-out eyes) pick the best epoch and the best candidate (``choose_recipe``); the test
# images are only measured, never used to choose.
RECIPE = ("--lr", "3e-4", "--lr_schedule", "cosine", "--epochs", "80", "--val_fraction", "0.2")
RECIPE_AUGMENTATIONS = ("flip", "combined")


def _crops_per_image(profile):
    args = profile["segmentation"]
    return int(args[args.index("--crops_per_image") + 1]) if "--crops_per_image" in args else 1


def runs_of(problem, profile="cpu"):
    """The names of the runs that answer ``problem`` (e.g. "4.2"), in registry order."""
    return [name for name, run in runs(profile).items() if run.problem == problem]


# --dry_run: every run of the plan, made tiny, to check on any machine that the plan works
DRY_RUN = {"main_segmentation.py": ["--epochs", "1", "--image_size", "64", "--crop_size", "0", "--batch_size", "2",
                                    "--eval_every", "1", "--train_fraction", "0.25"],
           "main_classification.py": ["--epochs", "1", "--subset", "64"],
           "convolution.py": ["--quick"]}
DRY_RUN_UNET = ["--base_channels", "8"]  # and the UNets at an eighth of their width (smp's have no such option)


# Problem 4's comparisons: the runs each compares, made with every seed of a plan. The order
# is the order the seeds' copies are made in, so that a plan cut short has whole comparisons:
# 4.1, then 4.3's baseline and first four strategies, 4.4's pair and its quarter-data pair, the
# fifth strategy, and the sweep's seeds last.
COMPARISONS = {
    "4.1": ("unet", "unet_noskip"),
    "4.3": tuple(f"aug_{name}" for name in STRATEGIES),
    "4.4": ("smp_pretrained", "smp_scratch", "smp_pretrained_quarter", "smp_scratch_quarter"),
    "4.2": tuple(f"lr_{lr}" for lr in LEARNING_RATES),
}
SEED_ORDER = (*COMPARISONS["4.1"], *COMPARISONS["4.3"][:-1], *COMPARISONS["4.4"], COMPARISONS["4.3"][-1],
              *COMPARISONS["4.2"])
# The arms a comparison is answered without while their seeds are not all made: 4.3's fifth
# strategy, whose seeds a plan makes after 4.4's (and the first thing it cuts after the
# sweep's seeds); 4.3 then compares no augmentation with the first four strategies.
LEFT_OUT_UNTIL_SEEDED = {"4.3": (COMPARISONS["4.3"][-1],)}


def plan(profile, data, data_dir, seeds=None, dry_run=False):
    """The runs of a profile, in the order they are made: name -> (script, arguments).
    A run's own arguments come last, so they override the profile's. ``seeds`` (default: the
    profile's) adds a copy of every run of a Problem 4 comparison for each other seed
    (``NAME_seedS``). The order: the runs of the other problems and one seed of every arm (the
    reference UNet's three seeds at once), then the seed copies in ``SEED_ORDER``, then the
    Problem 4 runs that are no comparison's arm. ``dry_run`` shrinks every run."""
    p = PROFILES[profile]
    seeds = p["seeds"] if seeds is None else seeds
    common = {"main_segmentation.py": ["--dataset", data, *p["segmentation"]],
              "main_classification.py": ["--data_dir", data_dir, *p["classification"]],
              "convolution.py": []}
    every = runs(profile)

    def made(run, extra=()):
        tiny = DRY_RUN[run.script] if dry_run else []
        if dry_run and run.script == "main_segmentation.py" and "smp_unet" not in run.arguments:
            tiny = [*tiny, *DRY_RUN_UNET]
        return run.script, merge(merge(common[run.script], run.arguments), [*extra, *tiny])
    arms = {name for names in COMPARISONS.values() for name in names}
    planned = {}
    for name, run in every.items():
        if name in arms or not run.problem.startswith("4"):
            planned[name] = made(run)
        if name == "unet":  # the reference UNet's seeds first: they check the profile's patch size
            planned.update({f"{name}_seed{seed}": made(run, ["--seed", str(seed)]) for seed in seeds})
    for name in SEED_ORDER:
        for seed in seeds:
            planned[f"{name}_seed{seed}"] = made(every[name], ["--seed", str(seed)])
    planned.update({name: made(run) for name, run in every.items() if name not in planned})
    return planned


def lease_plan(data, seeds=(43, 44), dry_run=False):
    """The ``gpu`` profile in the order a GPU lease makes it, most valuable first, so a lease
    cut short has made what matters most: name -> (script, arguments).

    1. one seed of every Problem 4 comparison: the reference UNet and the one without skips
       (4.1), the five Adam rates (4.2), no augmentation and each strategy (4.3), the
       EfficientNet-Lite0 pair and its quarter-data pair (4.4);
    2. ``seeds`` of the 4.3 strategies, then of the 4.1 pair, of the 4.4 pair, of the sweep;
    3. the best-recipe candidates (chosen on held-out training eyes: ``choose_recipe``);
    4. the rest of the profile (cosine UNet, ResNet-18 pair, convolution study, PathMNIST runs,
       which an offline machine records as not run)."""
    every = plan("gpu", data, "data", seeds, dry_run)
    first = ["unet", "unet_noskip", *runs_of("4.2", "gpu"), *(f"aug_{name}" for name in STRATEGIES),
             "smp_pretrained", "smp_scratch", "smp_pretrained_quarter", "smp_scratch_quarter"]
    seeded = [f"aug_{name}" for name in STRATEGIES] + ["unet", "unet_noskip", "smp_pretrained", "smp_scratch"] + \
        list(runs_of("4.2", "gpu"))
    order = [*first, *(f"{name}_seed{s}" for name in seeded for s in seeds),
             *(f"recipe_{aug}" for aug in RECIPE_AUGMENTATIONS)]
    order += [name for name in every if name not in order and "_seed" not in name]
    return {name: every[name] for name in order}


def choose_recipe(root):
    """The best-recipe candidate with the highest thresholded Dice on its held-out training
    eyes (its best epoch), from ``root/recipe_*/results.json``; None until one is made. The
    test metrics are never read here."""
    import json
    from pathlib import Path
    scores = {}
    for aug in RECIPE_AUGMENTATIONS:
        path = Path(root) / f"recipe_{aug}" / "results.json"
        if path.exists():
            results = json.loads(path.read_text())
            assert results["evaluated_on"] == "validation", path
            scores[f"recipe_{aug}"] = max(results["valid_dice_thresholded"])
    return max(scores, key=scores.get) if scores else None


def merge(base, own):
    """``base`` then ``own``, without the options of ``base`` that ``own`` sets again, so a
    command never says ``--epochs 10 ... --epochs 40``."""
    overridden = {a for a in own if a.startswith("--")}
    kept, skip = [], False
    for i, a in enumerate(base):
        if skip:
            skip = False
            continue
        if a in overridden:
            skip = i + 1 < len(base) and not base[i + 1].startswith("--")
            continue
        kept.append(a)
    return [*kept, *own]
