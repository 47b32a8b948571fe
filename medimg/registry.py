"""Every run of the report, by name, in two profiles:

- ``gpu``: the assignment's hyperparameters exactly (15 classification epochs, 40
  segmentation epochs on whole 512x512 images, the template's batch sizes).
- ``cpu``: the same optimiser, rate, weight decay, batch 2, loss and 1600 training steps,
  with one thing scaled so that two CPU cores can make them: whole images resized to
  ``CPU_IMAGE`` px (a quarter of the pixels). A fifth of the training eyes is held out to
  measure how well each run generalises (never the test images). The learning-rate sweep
  (4.2) was made earlier on ``CPU_PATCH``-px patches and stays in that setting. PathMNIST
  runs on a subset.

Problem 4.3 trains on a quarter of the eyes that are not held out, for the same 1600 steps
(so four times the epochs): with all of them the UNet scores as well on held-out eyes as on
its training eyes, and augmentation has no gap to close (``tools/pilot.py`` checks both).

``runs(profile)`` is the only list of runs: ``experiments.py``, the report, the GPU
lease and the tests read it. A new experiment is one ``Run`` here, an answer in
``report/answers.py``, a figure in ``report/plots.py`` and its text in ``report/*.typ``."""
from dataclasses import dataclass

from medimg.strategies import STRATEGIES  # the augmentation strategies are the ones the code builds

LEARNING_RATES = ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5")
# The cpu profile's image size: whole images at a quarter of their pixels (a pilot checks that the
# reference UNet leaves the all-background output early enough there: python -m tools.pilot).
CPU_IMAGE = 256
# The patch size of the sweep's cpu runs (chosen by the earlier pilot, runs/cpu/pilot/choice.json).
CPU_PATCH = 128

# Every run's own seed (the scripts' default); a profile's "seeds" are the other seeds its
# comparisons repeat each run with, as the copies NAME_seedS.
FIRST_SEED = 42


def copy_name(name: str, seed: int) -> str:
    """The folder of run ``name`` made with ``seed``: ``name`` itself for ``FIRST_SEED``, else ``NAME_seedS``."""
    return name if seed == FIRST_SEED else f"{name}_seed{seed}"


# The arguments of each setting, by profile; a run names its setting.
PROFILES = {
    # The assignment's hyperparameters (the scripts' defaults), nothing scaled. Only the
    # reference UNet, whose figure answers the overfitting question, also evaluates the
    # training eyes on whole images (an evaluation's cost, not a hyperparameter). 4.3 as on
    # the CPU: a quarter of the eyes not held out, 1600 steps, the last epoch's weights.
    "gpu": {
        "classification": [],
        "segmentation": ["--train_eval", "never"],
        "reference_unet": ["--train_eval", "every"],
        "sweep": [],
        "augmentation": ["--val_fraction", "0.2", "--train_fraction", "0.25", "--epochs", "200",
                         "--eval_every", "20", "--train_eval", "every", "--final_weights", "last"],
        "long_unet": ["--lr_schedule", "cosine"],
        "seeds": (),
        "more_seeds": {},
        "convolution": [],
    },
    # Two CPU cores: whole images at CPU_IMAGE px; 16 training eyes (64 images, 50 epochs of 32
    # steps) and 4 held out, both evaluated every fifth epoch; the test images measured with the
    # last epoch's weights. 4.3: 4 training eyes (16 images, 200 epochs of 8 steps). The sweep: the
    # earlier patch setting (a CPU_PATCH-px patch of each image, all eyes, 40 epochs of 40 steps).
    "cpu": {
        "classification": ["--subset", "20000", "--epochs", "5"],
        "segmentation": ["--image_size", str(CPU_IMAGE), "--val_fraction", "0.2", "--epochs", "50",
                         "--eval_every", "5", "--train_eval", "every", "--final_weights", "last"],
        "reference_unet": [],
        "sweep": ["--image_size", "0", "--val_fraction", "0", "--epochs", "40", "--crop_size", str(CPU_PATCH),
                  "--eval_every", "4", "--train_eval", "never"],
        "augmentation": ["--train_fraction", "0.25", "--epochs", "200", "--eval_every", "20"],
        "seeds": (43, 44),
        # the pilot on whole images (runs/cpu_whole/pilot_whole/choice.json): without augmentation
        # the held-out Dice spreads across seeds by more than 0.03, so 4.3 takes five seeds
        "more_seeds": {"4.3": (45, 46)},
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
    setting: str = ""  # the profile's arguments of that name come before the run's own


def runs(profile="cpu"):
    """Every run of the report, in the order they are made. The only list of runs: the
    report, the SLURM array (through --list) and the tests read it."""
    p = PROFILES[profile]
    seg, cls = "main_segmentation.py", "main_classification.py"
    lite0 = ("--model", "smp_unet", "--encoder", "efficientnet-lite0")
    # a quarter of the training eyes, four times the epochs (and evaluated a quarter as often): the same steps
    quarter = ("--train_fraction", "0.25", "--epochs", str(4 * _option(p, "--epochs", 40)),
               "--eval_every", str(4 * _option(p, "--eval_every", 1)))
    runs = [
        Run("convolution", "2.1", "convolution.py", tuple(p["convolution"]), "convolution study"),
        Run("unet", "4", seg, ("--model", "unet", *p["reference_unet"]), "UNet (skip connections)"),
        Run("unet_noskip", "4.1", seg, ("--model", "unet_noskip"), "UNet without skip connections"),
        *[Run(f"lr_{lr}", "4.2", seg, ("--model", "unet", "--optimizer", "adam", "--lr", lr),
              f"Adam, lr {power_of_ten(lr)}", setting="sweep") for lr in LEARNING_RATES],
        # aug_none is the comparison's own baseline (the same eyes and length as the others, seeds alike);
        # the report's examples of the strategies are drawn apart (tools/augmentation_examples.py)
        *[Run(f"aug_{name}", "4.3", seg, ("--model", "unet", "--augmentation", name), name,
              setting="augmentation") for name in STRATEGIES],
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
RECIPE_AUGMENTATIONS = ("affine", "combined")


def _option(profile, option, default):
    """The integer value of ``option`` in the profile's segmentation arguments, else ``default``."""
    args = profile["segmentation"]
    return int(args[args.index(option) + 1]) if option in args else default


def power_of_ten(rate: str) -> str:
    """``"1e-3"`` -> ``"10⁻³"``: rates in labels as the report's text writes them."""
    mantissa, exponent = rate.split("e")
    assert mantissa == "1", rate
    return "10" + exponent.translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


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
# fifth strategy, the ResNet-18 UNet from scratch (4.4's other network, not one of its arms), and
# the sweep's seeds last.
COMPARISONS = {
    "4.1": ("unet", "unet_noskip"),
    "4.3": tuple(f"aug_{name}" for name in STRATEGIES),
    "4.4": ("smp_pretrained", "smp_scratch", "smp_pretrained_quarter", "smp_scratch_quarter"),
    "4.2": tuple(f"lr_{lr}" for lr in LEARNING_RATES),
}
QUESTION_OF = {name: question for question, names in COMPARISONS.items() for name in names}
SEED_ORDER = (*COMPARISONS["4.1"], *COMPARISONS["4.3"][:-1], *COMPARISONS["4.4"], COMPARISONS["4.3"][-1],
              "smp_resnet18_scratch", *COMPARISONS["4.2"])
# The arms a comparison is answered without while their seeds are not all made: 4.3's fifth
# strategy, whose seeds a plan makes after 4.4's (and the first thing it cuts after the
# sweep's seeds); 4.3 then compares no augmentation with the first four strategies.
LEFT_OUT_UNTIL_SEEDED = {"4.3": (COMPARISONS["4.3"][-1],)}
# Runs of another comparison that a question also sets its arms against: 4.4 asks for "the same
# UNet trained from scratch", so the pretrained network meets the course UNet (4.1's reference)
# too. A reference is read only where it shares the arms' seeds and code, else left out alone.
REFERENCES = {"4.4": ("unet",)}


def seeds_of(profile, question, seeds=None):
    """The seeds besides ``FIRST_SEED`` that ``question``'s arms are made with: the profile's
    ``seeds`` and its ``more_seeds`` of that question, or exactly ``seeds`` where given."""
    p = PROFILES[profile]
    return (*p["seeds"], *p["more_seeds"].get(question, ())) if seeds is None else tuple(seeds)


def plan(profile, data, data_dir, seeds=None, dry_run=False):
    """The runs of a profile, in the order they are made: name -> (script, arguments).
    A run's own arguments come last, so they override the profile's. ``seeds`` (default: the
    profile's, with its ``more_seeds``: ``seeds_of``) adds a copy of every run of a Problem 4
    comparison for each other seed (``NAME_seedS``). The order: the runs of the other problems
    and one seed of every arm (the reference UNet's three seeds at once), then the seed copies in
    ``SEED_ORDER``, then the Problem 4 runs that are no comparison's arm. ``dry_run`` shrinks
    every run."""
    p = PROFILES[profile]
    common = {"main_segmentation.py": ["--dataset", data, *p["segmentation"]],
              "main_classification.py": ["--data_dir", data_dir, *p["classification"]],
              "convolution.py": []}
    every = runs(profile)

    def made(run, extra=()):
        tiny = DRY_RUN[run.script] if dry_run else []
        if dry_run and run.script == "main_segmentation.py" and "smp_unet" not in run.arguments:
            tiny = [*tiny, *DRY_RUN_UNET]
        base = merge(common[run.script], p[run.setting]) if run.setting else common[run.script]
        return run.script, merge(merge(base, run.arguments), [*extra, *tiny])
    arms = {name for names in COMPARISONS.values() for name in names} | set(SEED_ORDER)  # seeded: in registry order
    planned = {}
    for name, run in every.items():
        if name in arms or not run.problem.startswith("4"):
            planned[name] = made(run)
        if name == "unet":  # the reference UNet's seeds first: they check the profile's patch size
            planned.update({copy_name(name, seed): made(run, ["--seed", str(seed)])
                            for seed in seeds_of(profile, "4.1", seeds)})
    for name in SEED_ORDER:
        for seed in seeds_of(profile, QUESTION_OF.get(name), seeds):
            planned[copy_name(name, seed)] = made(every[name], ["--seed", str(seed)])
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
    order = [*first, *(copy_name(name, s) for name in seeded for s in seeds),
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
