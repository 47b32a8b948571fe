"""
Build the report from the runs' logs:

    python -m report.build --runs runs/cpu            # -> report/report.pdf
    python -m report.build --drive PATH               # + the human baseline, from the raw DRIVE

Reads the logs of every run in the registry (``medimg.registry.runs``) under RUNS,
computes each question's numbers and claims (``answers.py``), redraws the figures into
``report/figures/``, writes the numbers into ``report/generated/numbers.json`` (the
Typst source reads them from there: no result is typed into the text), and compiles
``report/report.typ`` with Typst. A claim the logs no longer support stops the build
with a message naming it. The runs at the assignment's scale are read from ``runs/gpu``
beside ``runs/cpu`` (seed copies ``NAME_seedS`` included), the human baseline from
``runs/human_baseline.json``, which ``--drive`` writes (``report/human_baseline.py``).
The speed study lives in ``docs/performance.md`` (``python -m report.performance``).
"""
import argparse
import datetime
import json
import math
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

from medimg import registry
from medimg.cli import UserError, run_cli
from medimg.runfiles import atomic_write, read_json, write_json
from report import answers, logs, plots
from report.logs import copy_names, done, human_baseline, load_runs

MAIN_TEXT_PAGES = 13  # Problems 1-4 and the conclusion, at most (the appendix follows)

PHOTOGRAPHS = ["blur", "edges"]  # embedded as JPEG
EXAMPLES = "augmentation_examples"  # the folder of tools/augmentation_examples.py, beside the runs
EXAMPLES_COMMAND = "python -m tools.augmentation_examples --data data/retina"


def architecture_facts():
    """Parameter counts and per-stage output shapes, measured on the graded models. Built and run
    on PyTorch's meta device: shapes and counts without allocating or computing a weight."""
    import torch
    with torch.device("meta"):
        return _architecture_facts()


def _architecture_facts():
    import torch

    from mlp import MLP
    from mobileNet import MobileNet
    from unet import UNet

    def count(model):
        return sum(p.numel() for p in model.parameters())

    def shapes(model, x, names):
        seen = {}
        hooks = [getattr(model, n).register_forward_hook(
            lambda m, i, o, n=n: seen.__setitem__(n, "×".join(str(s) for s in o.shape[1:]))) for n in names]
        with torch.no_grad():
            model.eval()(x)
        for h in hooks:
            h.remove()
        return [{"layer": n, "shape": seen[n]} for n in names]

    unet_layers = ["encoder_block1", "encoder_block2", "encoder_block3", "encoder_block4", "encoder_block5",
                   "decoder_block1", "decoder_block2", "decoder_block3", "decoder_block4", "outconv"]
    mobilenet = MobileNet(9)
    # every module in forward order, under the model's own names: the table can neither skip nor misname a
    # block (the five repeated ones are dw_sep_conv61 to dw_sep_conv65)
    mobilenet_layers = [name for name, _ in mobilenet.named_children()]
    # the same network with every depthwise-separable block replaced by a standard 3x3 conv
    standard = 3 * 3 * 3 * 32 + sum(9 * cin * cout for cin, cout in
                                    [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
                                    + [(512, 512)] * 5 + [(512, 1024), (1024, 1024)])
    separable = sum(p.numel() for n, p in mobilenet.named_parameters() if "conv" in n and p.dim() == 4)
    return {
        "mlp_params": count(MLP(3 * 28 * 28, [1024, 512, 64, 64], 9)),
        "mobilenet_params_1000": count(MobileNet(1000)),
        "mobilenet_params_9": count(mobilenet),
        "mobilenet_conv_weights": separable,
        "standard_conv_weights": standard,
        "mobilenet_shapes_224": shapes(mobilenet, torch.randn(1, 3, 224, 224), mobilenet_layers),
        "mobilenet_shapes_28": shapes(mobilenet, torch.randn(2, 3, 28, 28), mobilenet_layers),
        # the input side of each of the 13 depthwise separable blocks on a 28x28 image
        "mobilenet_block_inputs_28": _block_inputs(mobilenet, torch.randn(2, 3, 28, 28)),
        "unet_params": count(UNet(3, 1)),
        "unet_noskip_params": count(UNet(3, 1, skip_connections=False)),
        "unet_shapes_512": shapes(UNet(3, 1), torch.randn(1, 3, 512, 512), unet_layers),
    }


def _block_inputs(model, x):
    """The spatial side of the input of each depthwise separable block, in forward order."""
    import torch

    from mobileNet import DepthwiseSeparableConv
    sides = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(i[0].shape[-1]))
             for m in model.modules() if isinstance(m, DepthwiseSeparableConv)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sides


def prediction_panels(arms, out, augmentation_arms):
    """Each comparison's predictions side by side on one test image (``plots.prediction_panels``),
    drawn where at least two of its configurations wrote their masks and one of them predicts
    vessels. Each configuration is shown by its seed with the highest test Dice that wrote its
    masks (the caption says so). ``arms``: each question's runs as it may compare them
    (``logs.comparable``: a run it may not read is recorded as not made, so never drawn);
    ``augmentation_arms``: the runs 4.3 compares."""
    # (4.4 shows its curves and table only: its page has no room for predictions)
    comparisons = {"skip": ("4.1", registry.COMPARISONS["4.1"]), "lr": ("4.2", registry.runs_of("4.2")),
                   "augmentation": ("4.3", augmentation_arms)}
    panels = {}
    for key, (question, names) in comparisons.items():
        runs = arms[question]
        has_masks = lambda k: bool(list(Path(runs.get(k, {}).get("folder", "/none")).glob("example_*")))

        def best(name):  # the seed with the highest test Dice, where that run wrote its masks
            keys = copy_names(runs, name)
            top = max(keys, key=lambda k: runs[k]["final_metrics"]["dice"]) if keys else None
            return top if top and has_masks(top) else None

        chosen = [k for k in map(best, names) if k]
        learned = [k for k in chosen if runs[k]["final_metrics"]["dice"] >= 0.01]
        if len(chosen) < 2 or not learned:
            panels[key] = {"drawn": [], "image": None, "best_of_seeds": False}
            continue
        drawn, image = plots.prediction_panels(runs, chosen, out / f"panel_{key}.png")
        if set(chosen) - set(drawn):  # other masks than the first drawn run's: not one panel
            print(f"panel {key}: {', '.join(sorted(set(chosen) - set(drawn)))} left out (another test image "
                  f"or size than {drawn[0] if drawn else 'the first run'})")
        panels[key] = {"drawn": drawn, "image": image, "missing": [n for n in names if not best(n)],
                       "best_of_seeds": any(len(copy_names(runs, n)) > 1 for n in names)}
    return panels


def figures_for(runs, arms, gpu, root, out, numbers):
    """Every figure the text shows, redrawn from the logs: ``runs`` as loaded, ``arms`` each
    question's runs as it may compare them (``logs.comparable``)."""
    human = (numbers["p4_ref"].get("human") or {}).get("value")
    for stale in out.glob("*.*"):  # a figure whose runs are gone must not linger
        stale.unlink()
    from medimg import convolution
    plots.convolution_speed(runs["convolution"]["records"], out / "convolution_speed.png")
    # blur and edges are cheap, deterministic functions of the run's photograph: redraw them
    photo = runs["convolution"]["config"]["image"]
    image = convolution.load_grayscale(None if photo.startswith("matplotlib") else photo)
    numbers["p2_1"]["detail"] = {"blur": plots.blur(image, out / "blur.png"), "edges": plots.edges(image, out / "edges.png")}
    if numbers["p4_1"]["done"]:
        plots.curves(arms["4.1"], registry.COMPARISONS["4.1"], out / "skip.png", soft=True)
    if gpu is not None and any(done(gpu[n]) for n in ("unet", "unet_noskip")):
        plots.curves(gpu, ["unet", "unet_noskip"], out / "skip_assignment.png", human=human)
    for question in ("4.2", "4.3", "4.4"):  # the runs of each question made at the assignment's scale
        names = [c["name"] for c in numbers["scale"]["configurations"] if c["problem"] == question]
        if names:
            plots.curves(gpu, names, out / f"scale_{question}.png", human=human, ncol=2)
    if numbers["p4_2"]["done"]:  # runs stuck at a Dice of 0 still differ in soft Dice and loss
        names = registry.runs_of("4.2")
        plots.sweep(arms["4.2"], names, out / "lr.png", {name: f"lr $10^{{{round(math.log10(float(name[3:])))}}}$" for name in names})
    # augmented crops and a quarter of the eyes are other training data: their test losses are compared
    # 4.3's compared arms: every strategy, or all but one whose seeds are not made yet
    augmentation_arms = [r["name"] for r in numbers["p4_3"]["rows"]] if numbers["p4_3"]["done"] \
        else registry.runs_of("4.3")
    if numbers["p4_3"]["done"]:
        plots.curves(arms["4.3"], augmentation_arms, out / "augmentation_curves.png", soft=True, test_loss=True, ncol=3)
    if numbers["p4_4"]["done"]:
        course = ("unet",) if "course" in numbers["p4_4"] else ()  # the course UNet from scratch, beside them
        plots.curves(arms["4.4"], registry.COMPARISONS["4.4"] + course, out / "smp.png", soft=True, test_loss=True,
                     labels={**answers.SMP_LABELS, "unet": "course UNet from scratch, all eyes"}, human=human,
                     ncol=3 if course else 2)
    numbers["panels"] = prediction_panels(arms, out, augmentation_arms)
    if gpu is not None and done(gpu["unet"]) and gpu["unet"].get("train_whole_dice_thresholded"):
        plots.generalisation(gpu["unet"], out / "generalisation.png")
    if numbers["p2_6"]["available"]:
        plots.classification(runs, registry.runs_of("2.6"), out / "classification_curves.png")
    drawn = augmentation_examples(root / EXAMPLES, out)
    if drawn is not None:
        numbers["augmentation_figure"] = drawn
    from PIL import Image
    for name in PHOTOGRAPHS:  # photographs compress tenfold as JPEG, which keeps the PDF small
        png = out / f"{name}.png"
        if png.exists():
            with Image.open(png) as im:
                im.convert("RGB").save(out / f"{name}.jpg", quality=88)
            png.unlink()


def augmentation_examples(folder, out):
    """Copy the examples of 4.3's strategies that ``tools/augmentation_examples.py`` drew into
    ``folder`` to ``out/unet_augmentations.jpg`` and return their record, or None where they are
    not drawn; a UserError if they are not what the runs train on now (other strategies, or
    another image size than the cpu profile's)."""
    if not (folder / "examples.json").exists():
        return None
    drawn = read_json(folder / "examples.json")
    redraw = f"redraw them: {EXAMPLES_COMMAND}"
    if drawn["strategies"] != answers.strategies():
        raise UserError(f"{folder}: drawn with other strategies than medimg/strategies.py builds now; {redraw}")
    if drawn["image_size"] != registry.CPU_IMAGE:
        raise UserError(f"{folder}: drawn at {drawn['image_size']} px, but the cpu profile trains at "
                        f"{registry.CPU_IMAGE} px; {redraw}")
    if not (folder / "augmentations.jpg").exists():
        raise UserError(f"{folder / 'augmentations.jpg'}: missing beside its examples.json; {redraw}")
    shutil.copyfile(folder / "augmentations.jpg", out / "unet_augmentations.jpg")
    return drawn


def write_human_baseline(drive, runs_parent, retina=None):
    """Score DRIVE's second observer against the first under the report's protocol and write
    ``runs_parent/human_baseline.json``; ``retina``: the course folder, to check the resampling."""
    from report import human_baseline as hb
    drive = Path(drive)
    if not (drive / "test" / "1st_manual").is_dir() or not (drive / "test" / "2nd_manual").is_dir():
        raise UserError(f"{drive}: not the raw DRIVE (it needs test/1st_manual and test/2nd_manual)")
    if retina is None and (drive.parent / "retina" / "test" / "mask").is_dir():
        retina = drive.parent / "retina"
    record = hb.write(drive, Path(runs_parent) / logs.HUMAN_BASELINE, retina)
    print(f"human baseline: second observer against the first, mean Dice {record['mean_dice']:.3f} "
          f"over {record['n_images']} test images -> {Path(runs_parent) / logs.HUMAN_BASELINE}")
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/cpu", help="the folder of the CPU runs (runs/gpu beside it is read too)")
    parser.add_argument("--out", default=str(HERE / "report.pdf"))
    parser.add_argument("--drive", help="the raw DRIVE folder (test/1st_manual, test/2nd_manual): measure the human "
                                        "baseline under the report's protocol into runs/human_baseline.json first")
    parser.add_argument("--retina", help="the course's retina folder, to check that the resampling reproduces its "
                                         "test masks (default: a 'retina' folder beside --drive, where there is one)")
    args = parser.parse_args(argv)
    root = Path(args.runs)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; run experiments.py first or pass --runs runs/<profile>")
    if args.drive:
        write_human_baseline(args.drive, root.parent, args.retina)
    profile = logs.profile_of(root)
    runs = load_runs(root, profile)
    if not done(runs["convolution"]):  # Problem 2 is answered from it: seconds to make, always there
        raise UserError(f"{root / 'convolution'}: no convolution study there; make it with "
                        f"python experiments.py --profile {profile} --only convolution")
    gpu_root = root.parent / "gpu"
    gpu = load_runs(gpu_root, "gpu") if profile == "cpu" and gpu_root.is_dir() else None
    human = human_baseline(root)
    arch = architecture_facts()
    reference = answers.problem_4_reference(runs, human)
    if reference["numbers"].get("seeds_made_otherwise"):
        print(f"the reference UNet: {', '.join(reference['numbers']['seeds_made_otherwise'])} not read with unet "
              f"(made by other code or trained otherwise)")
    scale = answers.assignment_scale(gpu)
    # a comparison's arms are compared only when one version of the code made them all
    # (on the CPU, with every seed its arms are planned with; at the assignment's scale, with what was made)
    arms = {question: logs.comparable(runs, question, (registry.FIRST_SEED, *registry.seeds_of(profile, question)))
            for question in registry.COMPARISONS}
    gpu_41 = logs.comparable(gpu, "4.1") if gpu is not None else None
    per_question = {"p2_1": answers.problem_2_1(runs), "p2_6": answers.problem_2_6(runs, profile, arch),
                    "p4_ref": reference, "p4_1": answers.problem_4_1(arms["4.1"], gpu_41),
                    "p4_2": answers.problem_4_2(arms["4.2"]),
                    "p4_3": answers.problem_4_3(arms["4.3"]),
                    "p4_4": answers.problem_4_4(arms["4.4"])}
    failed = [claim for answer in per_question.values() for claim, holds in answer["claims"] if not holds]
    if failed:
        raise UserError("the logs no longer support these claims of the report: " + "; ".join(failed) +
                        ". Rewrite the text in report/*.typ and its claims in report/answers.py")
    numbers = {key: answer["numbers"] for key, answer in per_question.items()}
    # what each comparison's curves were evaluated on, for its captions ("test" or "held-out")
    numbers["curves_on"] = {q: logs.evaluated_on([r for name in registry.COMPARISONS[q] for r in logs.copies(arms[q], name)])
                            for q in registry.COMPARISONS}
    # how each comparison's runs were trained and scored (whole images or patches), for the protocol's text
    numbers["settings"] = {q: logs.setting([r for name in registry.COMPARISONS[q] for r in logs.copies(arms[q], name)])
                           for q in registry.COMPARISONS}
    numbers["settings"]["reference"] = logs.setting([runs["unet"]]) if done(runs["unet"]) else None
    numbers.update(generated=datetime.datetime.now().astimezone().isoformat(timespec="minutes"), profile=profile,
                   arch=arch, seg_rows=answers.segmentation_table(runs),
                   scale=scale, human=answers.human_numbers(human), level=answers.LEVEL,
                   seeded=answers.seeded(runs), cpu_runs=answers.cpu_runs_made(runs),
                   commands={"main": f"python experiments.py --profile {profile} --data data/retina --data_dir data",
                             "gpu": "python experiments.py --profile gpu --data data/retina --data_dir data",
                             "seeds": "python experiments.py --profile gpu --data data/retina --data_dir data --seeds 43 44",
                             "human": "python -m report.build --runs runs/cpu --drive data/DRIVE",
                             "examples": EXAMPLES_COMMAND,
                             "build": f"python -m report.build --runs runs/{profile}",
                             "tests": "python -m pytest"})
    figures, generated = HERE / "figures", HERE / "generated"
    figures.mkdir(exist_ok=True)
    figures_for(runs, arms, gpu, root, figures, numbers)
    write_json(generated / "numbers.json", numbers)

    import typst
    out = Path(args.out)
    try:
        atomic_write(out, lambda tmp: typst.compile(str(HERE / "report.typ"), output=tmp, root=str(HERE)))
    except typst.TypstError as err:
        where = next((line.strip() for line in str(getattr(err, "diagnostic", "")).splitlines() if "┌─" in line), "")
        raise UserError(f"report/report.typ does not compile: {str(err).splitlines()[0]} {where}; fix the source "
                        f"(numbers it reads are in report/generated/numbers.json)")
    placed = layout()
    write_json(generated / "layout.json", {**placed, "limit": MAIN_TEXT_PAGES})
    pages = placed["main_text_pages"]
    split = [q for q, table in placed["run_tables"].items() if len(table["pages"]) > 1 or table["off_page"]]
    print(f"wrote {out}" + (f" (main text {pages} pages, over the {MAIN_TEXT_PAGES} it may take: shorten it)"
                            if pages > MAIN_TEXT_PAGES else "")
          + (f" (the runs table of {', '.join(split)} does not lie whole on one page: split it)"
             if split else ""))


# report.typ's page: A4 with 2 cm margins; a row placed below the bottom margin has run off its page
TEXT_BOTTOM_PT = 841.89 - 2 / 2.54 * 72


def layout() -> dict:
    """Where the compiled report places things: the page on which the main text (Problems 1-4
    and the conclusion) ends (its ``<main-text-end>`` label), and for each of the appendix's
    tables of runs (its rows' ``<run-row>`` labels) its rows' count, the pages they lie on and
    how many of them start below the text's bottom margin (a table too tall for its page)."""
    import typst
    found = json.loads(typst.query(str(HERE / "report.typ"), "metadata", root=str(HERE)))
    tables = {}
    for element in found:
        if element.get("label") == "<run-row>":
            row = element["value"]
            table = tables.setdefault(row["table"], {"rows": 0, "pages": [], "off_page": 0})
            table["rows"] += 1
            table["pages"] = sorted(set(table["pages"]) | {row["page"]})
            table["off_page"] += row["y"] > TEXT_BOTTOM_PT
    ends = [int(e["value"]) for e in found if e.get("label") == "<main-text-end>"]
    if len(ends) != 1:
        raise UserError("report/report.typ: the <main-text-end> label must be placed once, in the conclusion's last line")
    return {"main_text_pages": ends[0], "run_tables": tables}


if __name__ == "__main__":
    run_cli(main)
