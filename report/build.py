"""
Build the report from the runs' logs:

    python -m report.build --runs runs/cpu            # -> report/report.pdf

Reads the logs of every run in the registry (``medimg.registry.runs``) under RUNS,
computes each question's numbers and claims (``answers.py``), redraws the figures into
``report/figures/``, writes the numbers into ``report/generated/numbers.json`` (the
Typst source reads them from there: no result is typed into the text), and compiles
``report/report.typ`` with Typst. A claim the logs no longer support stops the build
with a message naming it.
"""
import argparse
import datetime
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

from medimg import registry
from medimg.cli import UserError, run_cli
from medimg.runfiles import atomic_write, read_json, write_json
from report import answers, plots
from report.logs import done, load_runs

PHOTOGRAPHS = ["blur", "edges", "unet_augmentations", "unet_predictions"]  # embedded as JPEG


def architecture_facts():
    """Parameter counts and per-stage output shapes, measured on the graded models."""
    import torch
    torch.set_num_threads(1)  # small work; leave the other core to any training running beside
    from mlp import MLP
    from mobileNet import MobileNet
    from unet import UNet

    def count(model):
        return sum(p.numel() for p in model.parameters())

    def shapes(model, x, names):
        seen = {}
        hooks = [getattr(model, n).register_forward_hook(
            lambda m, i, o, n=n: seen.__setitem__(n, "x".join(str(s) for s in o.shape[1:]))) for n in names]
        with torch.no_grad():
            model.eval()(x)
        for h in hooks:
            h.remove()
        return [{"layer": n, "shape": seen[n]} for n in names]

    mobilenet_layers = ["conv0", "dw_sep_conv0", "dw_sep_conv1", "dw_sep_conv2", "dw_sep_conv3", "dw_sep_conv4",
                        "dw_sep_conv5", "dw_sep_conv65", "dw_sep_conv7", "dw_sep_conv8", "avgpool", "fc"]
    unet_layers = ["encoder_block1", "encoder_block2", "encoder_block3", "encoder_block4", "encoder_block5",
                   "decoder_block1", "decoder_block2", "decoder_block3", "decoder_block4", "outconv"]
    mobilenet = MobileNet(9)
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
        "unet_params": count(UNet(3, 1)),
        "unet_noskip_params": count(UNet(3, 1, skip_connections=False)),
        "unet_shapes_512": shapes(UNet(3, 1), torch.randn(1, 3, 512, 512), unet_layers),
    }


def bench_numbers(folder):
    """Every training-step benchmark of the profile (``bench*.json``, newest first) and the
    full-epoch timings, when they were run."""
    epochs = {}
    for model in ("mlp", "mobilenet"):
        timing = folder / f"epoch_timing_synthetic_{model}.json"
        if timing.exists():
            t = read_json(timing)
            epochs[model] = {"seconds": f"{t['timings']['train_seconds_per_epoch'][0]:.0f}",
                             "n": t["n_samples"]["train"], "command": t["command"],
                             "date": t.get("started", "")[:10], "cpu": t["machine"]["cpu"]}
    benches = []
    for path in sorted(folder.glob("bench*.json"), key=lambda p: read_json(p)["date"], reverse=True):
        bench = read_json(path)
        ceiling = bench.get("matmul_tflops") or {}
        rows = [{"model": r["model"], "config": r["config"], "seconds": f"{r['seconds_per_step']:.3f}",
                 "tflops": f"{r['tflops']:.2f}", "speedup": f"{r['speedup']:.2f}",
                 "fraction": f"{r['fraction_of_matmul']:.2f}" if r.get("fraction_of_matmul") is not None else "n/a"}
                for r in bench["results"]]
        benches.append({"rows": rows, "cpu": bench["machine"]["cpu"], "command": bench["command"],
                        "capability": bench["machine"].get("cpu_capability") or "",
                        "date": bench["date"][:16], "torch": bench["versions"]["torch"], "epochs": epochs,
                        "ceiling": ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in ceiling.items()) or "not measured"})
    return benches


def prediction_panels(runs, out, numbers):
    """Each comparison's predictions side by side on one test image (``plots.prediction_panels``):
    which runs each figure shows and which lack the masks (runs made before they were written)."""
    ours = {"aug_none": f"UNet, skips, {numbers['compare_epoch']} epochs"}
    # the augmentation panel shows the seed (the runs themselves or one set of copies) for
    # which the most strategies wrote their masks
    strategies = registry.runs_of("4.3")
    suffixes = [""] + sorted({k[len("aug_none"):] for k in runs if k.startswith("aug_none_seed")})
    has_masks = lambda name: bool(list(Path(runs.get(name, {}).get("folder", "/none")).glob("example_*")))
    augmentation = max(([n + suffix for n in strategies] for suffix in suffixes),
                       key=lambda names: sum(map(has_masks, names)))
    comparisons = {"skip": ["aug_none", "unet_noskip"], "lr": registry.runs_of("4.2"),
                   "augmentation": augmentation, "smp": ["aug_none", "smp_scratch", "smp_pretrained"]}
    panels = {}
    for key, names in comparisons.items():
        drawn, image = plots.prediction_panels(runs, names, out / f"panel_{key}.png", labels=ours)
        panels[key] = {"drawn": drawn, "image": image,
                       "older": [n for n in names if n not in drawn and done(runs.get(n, {}))],
                       "not_made": [n for n in names if not done(runs.get(n, {}))]}
    return panels


def profile_numbers(folder):
    """The profiler studies of the profile (``profile_step.py``'s ``profile*.json``)."""
    studies = []
    for path in sorted(folder.glob("profile*.json")):
        p = read_json(path)
        plain, cl = p["profiles"]["plain"]["by_kind"], p["profiles"]["channels_last"]["by_kind"]
        kinds = [k for k in plain if plain[k] >= 0.03 or cl.get(k, 0) >= 0.03]
        # each setting against the plain step measured alternately with it
        whole, other = p["whole_step_seconds"], p.get("other_settings_seconds", {})
        ratios = {**{k: whole["plain"] / v for k, v in whole.items()},
                  **{k: other["plain"] / v for k, v in other.items() if k != "plain"}}
        steps = {**whole, **{k: v for k, v in other.items() if k != "plain"}}
        conv_backward = plain.get("conv 3x3 backward", 0) / sum(plain.values())
        studies.append({
            "command": p["command"], "date": p["date"][:16], "cpu": p["machine"]["cpu"],
            "batch": p["batch"], "model": p["model"], "compile_seconds": f"{p.get('compile_seconds', 0):.0f}",
            "kinds": [{"kind": k, "plain": f"{plain.get(k, 0):.2f}", "channels_last": f"{cl.get(k, 0):.2f}"}
                      for k in kinds],
            "steps": [{"name": k, "seconds": f"{v:.2f}", "ratio": f"{ratios[k]:.2f}"} for k, v in steps.items()],
            "conv_backward_percent": f"{100 * conv_backward:.0f}",
            "per_layer_count": len(p["channels_last_layers"]), "layers": len(p["layers"]),
            # the plain step is the fastest of every setting measured: nothing to add to the candidates
            "plain_fastest": all(r <= 1 for r in ratios.values())})
    return studies


def figures_for(runs, root, out, numbers):
    """Every figure the text shows, redrawn from the logs."""
    E = numbers["p4_1"].get("E") or answers.compare_epoch(runs)
    if done(runs["convolution"]):
        from medimg import convolution
        convolution.speed_figure(runs["convolution"]["records"], out / "convolution_speed.png")
        # blur and edges are cheap, deterministic functions of the run's photograph: redraw them
        photo = runs["convolution"]["config"]["image"]
        image = convolution.load_grayscale(None if photo.startswith("matplotlib") else photo)
        convolution.blur_figure(image, out / "blur.png")
        convolution.edges_figure(image, out / "edges.png")
    plots.curves(runs, ["unet", "unet_cosine"], out / "reference.png")
    plots.curves(runs, ["unet", "unet_noskip"], out / "skip.png", up_to=E)
    plots.curves(runs, registry.runs_of("4.2"), out / "lr.png")
    augmentation = registry.runs_of("4.3")
    if not done(runs["aug_none"]):  # older profiles: no augmentation is the reference run's first E epochs
        augmentation = ["unet", *augmentation[1:]]
    plots.curves(runs, augmentation, out / "augmentation_curves.png", up_to=E, labels={"unet": "none"})
    plots.curves(runs, ["unet", "smp_scratch", "smp_pretrained", "smp_scratch_quarter", "smp_pretrained_quarter"],
                 out / "smp.png", up_to=E, labels={"unet": "our UNet, from scratch"})
    numbers["panels"] = prediction_panels(runs, out, numbers)
    if any(runs[n].get("initial_gradient_norms") for n in ("unet", "unet_noskip")):
        plots.gradient_norms(runs, out / "gradient_norms.png")
    if done(runs["unet"]) and runs["unet"].get("train_whole_soft_dice"):
        plots.generalisation(runs["unet"], out / "generalisation.png")
    if numbers["p2_6"]["available"]:
        plots.classification(runs, registry.runs_of("2.6"), out / "classification_curves.png")
    examples = [root / name / "augmentations.png" for name in registry.runs_of("4.3") + ["unet"]
                if (root / name / "augmentations.png").exists()]
    if examples:  # the run of Problem 4.3 that drew the strategies (older profiles: the reference run)
        shutil.copyfile(examples[0], out / "unet_augmentations.png")
    if (root / "unet" / "predictions.png").exists():
        shutil.copyfile(root / "unet" / "predictions.png", out / "unet_predictions.png")
    from PIL import Image
    for name in PHOTOGRAPHS:  # photographs compress tenfold as JPEG, which keeps the PDF small
        png = out / f"{name}.png"
        if png.exists():
            with Image.open(png) as im:
                im.convert("RGB").save(out / f"{name}.jpg", quality=88)
            png.unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/cpu", help="the folder of one profile's runs")
    parser.add_argument("--out", default=str(HERE / "report.pdf"))
    args = parser.parse_args(argv)
    root = Path(args.runs)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; run experiments.py first or pass --runs runs/<profile>")
    profile = root.name if root.name in registry.PROFILES else "cpu"
    runs = load_runs(root, profile)

    other = "gpu" if profile == "cpu" else "cpu"  # the other profile's runs, shown at their scale
    other_runs = load_runs(root.parent / other, other) if (root.parent / other).is_dir() else None
    reference = answers.problem_4_reference(runs)
    per_question = {"p2_1": answers.problem_2_1(runs), "p2_6": answers.problem_2_6(runs, profile),
                    "p4_ref": reference, "p4_1": answers.problem_4_1(runs), "p4_2": answers.problem_4_2(runs),
                    "p4_3": answers.problem_4_3(runs, reference["numbers"].get("overfits")),
                    "p4_4": answers.problem_4_4(runs, profile)}
    failed = [claim for answer in per_question.values() for claim, holds in answer["claims"] if not holds]
    if failed:
        raise UserError("the logs no longer support these claims of the report: " + "; ".join(failed) +
                        ". Rewrite the text in report/*.typ and its claims in report/answers.py")
    numbers = {key: answer["numbers"] for key, answer in per_question.items()}
    numbers.update(generated=datetime.datetime.now().astimezone().isoformat(timespec="minutes"), profile=profile,
                   arch=architecture_facts(), benches=bench_numbers(root / "bench"), profiles=profile_numbers(root / "bench"),
                   seg_rows=answers.segmentation_table(runs), compare_epoch=answers.compare_epoch(runs),
                   other_profile=answers.other_profile(other_runs, other),
                   commands={"main": f"python experiments.py --profile {profile}",
                             "build": f"python -m report.build --runs runs/{profile}"})
    figures, generated = HERE / "figures", HERE / "generated"
    figures.mkdir(exist_ok=True)
    figures_for(runs, root, figures, numbers)
    if "generalisation" in numbers["other_profile"]:
        plots.generalisation(other_runs["unet"], figures / "generalisation_other.png")
    write_json(generated / "numbers.json", numbers)

    import typst
    out = Path(args.out)
    try:
        atomic_write(out, lambda tmp: typst.compile(str(HERE / "report.typ"), output=tmp, root=str(HERE)))
    except typst.TypstError as err:
        where = next((line.strip() for line in str(getattr(err, "diagnostic", "")).splitlines() if "┌─" in line), "")
        raise UserError(f"report/report.typ does not compile: {str(err).splitlines()[0]} {where}; fix the source "
                        f"(numbers it reads are in report/generated/numbers.json)")
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)
