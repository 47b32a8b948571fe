"""experiments.py: the run list, skipping finished runs, and honest 'not run' records."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import interrupt_at_epoch

import experiments
from medimg import registry, runner

ROOT = Path(__file__).resolve().parents[1]


def test_every_question_has_its_runs_in_both_profiles():
    for profile in registry.PROFILES:
        runs = registry.plan(profile, "data/retina", "data")
        assert {"convolution", "mlp", "mobilenet", "mobilenet_probs", "unet", "unet_noskip", "smp_pretrained",
                "smp_scratch"} <= set(runs)
        assert {f"lr_{lr}" for lr in ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5")} <= set(runs)
        assert sum(name.startswith("aug_") for name in runs) >= 4


def training_steps(args, eyes=20, copies=4):
    """The optimiser steps of a whole-image run on the course's training set (20 eyes, four
    copies each): the held-out eyes and the kept fraction removed as ``retina`` rounds them."""
    if args["val_fraction"]:
        eyes -= max(1, round(eyes * args["val_fraction"]))
    if args["train_fraction"] < 1:
        eyes = max(1, round(eyes * args["train_fraction"]))
    return args["epochs"] * (eyes * copies // args["batch_size"])


def parse(arguments):
    from medimg.options import parse_segmentation_args
    return vars(parse_segmentation_args([*arguments, "--logdir", "x"]))


def test_gpu_profile_uses_the_assignments_hyperparameters():
    """Every gpu run is the assignment's (whole 512-px images, 40 epochs, 1600 steps), but for
    4.3's arms and the quarter-data arms, which train on fewer eyes for the same 1600 steps."""
    runs = registry.plan("gpu", "data/retina", "data")
    for name, (script, arguments) in runs.items():
        if name.startswith("recipe_"):  # our own recipe: longer on purpose (test_the_lease_plan...)
            continue
        fewer_eyes = name.startswith("aug_") or name.endswith("_quarter")
        for scaled in ("--crop_size", "--subset", "--image_size", *(() if fewer_eyes else ("--epochs",))):
            assert scaled not in arguments, (name, scaled)
        if script == "main_segmentation.py":
            assert training_steps(parse(arguments)) == 1600, name
    assert runs["lr_1e-3"][1][-4:] == ["--optimizer", "adam", "--lr", "1e-3"]


def test_later_arguments_override_the_profiles():
    script, arguments = registry.plan("cpu", "data/retina", "data")["lr_1e-5"]
    args = parse(arguments)
    assert args["lr"] == 1e-5 and args["optimizer"] == "adam" and args["crop_size"] == registry.CPU_PATCH > 0
    assert args["image_size"] == 0 and args["val_fraction"] == 0  # the sweep keeps its patch setting


def test_the_cpu_profile_keeps_every_hyperparameter_of_the_assignment():
    """The cpu profile differs from the gpu one (the assignment's) only in the image size, the
    held-out eyes (and so the epochs that make the same 1600 steps), how often it evaluates and
    which weights the test measures; the sweep keeps its patches. Every comparison has its
    three seeds, 4.3 five (the pilot's verdict)."""
    cpu, gpu = registry.plan("cpu", "D", "d"), registry.plan("gpu", "D", "d", seeds=(43, 44, 45, 46))
    for name, (script, arguments) in cpu.items():
        if script != "main_segmentation.py":
            continue
        ours, theirs = parse(arguments), parse(gpu[name][1])
        assert ours["batch_size"] == 2 and (ours["lr"], ours["optimizer"]) == (theirs["lr"], theirs["optimizer"])
        if name.startswith("lr_"):
            assert ours["crop_size"] == registry.CPU_PATCH and ours["epochs"] == 40 and ours["image_size"] == 0
            continue
        assert {k for k in ours if ours[k] != theirs[k]} <= {"image_size", "val_fraction", "epochs", "eval_every",
                                                             "train_eval", "final_weights"}, name
        assert ours["image_size"] == registry.CPU_IMAGE and ours["crop_size"] == 0 and ours["val_fraction"] == 0.2
        assert ours["final_weights"] == "last" and training_steps(ours) == 1600, name
    for question, arms in registry.COMPARISONS.items():
        seeds = {42, 43, 44, 45, 46} if question == "4.3" else {42, 43, 44}
        for name in arms:
            assert {parse(cpu[f"{name}_seed{s}"][1])["seed"] for s in seeds - {42}} | {parse(cpu[name][1])["seed"]} \
                == seeds
            assert f"{name}_seed{max(seeds) + 1}" not in cpu
    # the reference UNet's three seeds first (the pilot reads them), one seed of every other
    # arm before any other seed, and 4.2's seeds last
    names = [name for name in cpu if name != "convolution"]
    assert names[:3] == ["unet", "unet_seed43", "unet_seed44"]
    assert max(names.index(n) for arms in registry.COMPARISONS.values() for n in arms) < names.index("unet_noskip_seed43")
    assert names.index("aug_combined_seed44") < names.index("smp_resnet18_scratch_seed43") < names.index("lr_1e-1_seed43")


def test_list_prints_one_command_per_run(capsys, monkeypatch):
    import runpy  # the script as the README runs it (its __main__ guard), in this interpreter
    monkeypatch.setattr(sys, "argv", ["experiments.py", "--profile", "gpu", "--list"])
    runpy.run_path(str(ROOT / "experiments.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(registry.plan("gpu", "x", "y"))
    assert all(line.startswith("python experiments.py --profile gpu") and "--only" in line for line in out)


def test_a_run_this_machine_cannot_make_is_recorded_not_faked(tmp_path):
    # an unusable pathmnist.npz: the script says why in one line and exits 2, whatever the network
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pathmnist.npz").write_bytes(b"not a zip file")
    logdir = tmp_path / "runs" / "cpu" / "mlp"
    state = runner.run_one("mlp", "main_classification.py",
                                ["--data_dir", str(tmp_path / "data"), "--model", "mlp", "--device", "cpu"], logdir)
    assert state.startswith("not run")
    record = json.loads((logdir / "not_run.json").read_text())
    assert record["status"] == "not run" and "pathmnist.npz" in record["reason"]
    assert "main_classification.py" in record["command"]
    assert not (logdir / "results.json").exists()


def test_finished_runs_are_skipped(tmp_path):
    logdir = tmp_path / "done"
    logdir.mkdir()
    (logdir / "results.json").write_text("{}")
    assert runner.run_one("unet", "main_segmentation.py", [], logdir) == "complete (skipped)"


def test_an_interrupted_run_is_resumed(retina, tmp_path, monkeypatch):
    import main_segmentation as seg
    arguments = ["--dataset", str(retina), "--epochs", "2", "--crop_size", "32", "--batch_size", "2",
                 "--threads", "2", "--plain", "--base_channels", "4"]
    logdir = tmp_path / "runs" / "cpu" / "unet"
    interrupt_at_epoch(monkeypatch, seg, 1)  # experiments.py runs the script in a process of its own
    with pytest.raises(KeyboardInterrupt):
        seg.main([*arguments, "--logdir", str(logdir)])
    assert runner.status(logdir) == "interrupted"
    state = runner.run_one("unet", "main_segmentation.py", arguments, logdir)
    assert state.startswith("done"), state
    results = json.loads((logdir / "results.json").read_text())
    assert results["resumed_at_epoch"] == 1 and len(results["train_losses"]) == 2
    assert "--resume" in results["command"] and "--resume" in (logdir / "log.txt").read_text()
    assert not (logdir / "checkpoint.pt").exists()


def test_profile_arguments_are_not_repeated_when_a_run_overrides_them():
    script, arguments = registry.plan("cpu", "data/retina", "data")["unet"]
    assert arguments.count("--train_eval") == 1 and arguments[arguments.index("--train_eval") + 1] == "every"
    assert registry.merge(["--a", "1", "--flag", "--b", "2"], ["--b", "3"]) == ["--a", "1", "--flag", "--b", "3"]


def test_plot_runs_overlays_finished_runs(tmp_path, capsys):
    from PIL import Image

    from tools import plot_runs
    for name, shift in (("a", 0.0), ("b", 0.1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"train_losses": [1.0 - shift, 0.5], "valid_losses": [1.1, 0.6], "train_accs": [0.2, 0.6 + shift],
             "valid_accs": [0.1, 0.5]}))
    out = tmp_path / "overlay.png"
    plot_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    with Image.open(out) as im:
        assert im.size[0] > im.size[1] > 300  # two panels side by side
        assert len(set(im.convert("RGB").getdata())) > 50  # curves, not a blank canvas
    with pytest.raises(plot_runs.UserError, match="results.json"):
        plot_runs.main([str(tmp_path / "missing"), "--out", str(out)])


def test_a_fresh_clone_without_data_is_told_once_and_nothing_starts(tmp_path, capsys, offline):
    selected = {k: v for k, v in registry.plan("cpu", str(tmp_path / "no-retina"), str(tmp_path)).items()
                if k != "convolution"}
    todo, not_run = runner.check_and_estimate(selected, tmp_path / "runs" / "cpu", "cpu", estimate=False)
    assert todo == {} and set(not_run) == set(registry.runs_of("2.6"))
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("not run")]
    assert len(lines) == 2  # one line for the retina runs, one for PathMNIST
    assert any("no-retina" in l and "unet" in l for l in lines) and any("pathmnist.npz" in l for l in lines)
    # what this machine cannot have (PathMNIST offline) is recorded with the run; the dataset the
    # user has not put in place yet is only said (a fresh clone's records stay as committed)
    record = json.loads((tmp_path / "runs" / "cpu" / "mlp" / "not_run.json").read_text())
    assert "pathmnist.npz" in record["reason"] and record["command"].startswith("python main_classification.py")
    assert not (tmp_path / "runs" / "cpu" / "unet").exists()


def test_estimates_follow_the_runs_budget():
    from medimg import preflight
    cpu = registry.plan("cpu", "absent", "data")
    short, reference = preflight.estimate_seconds(*cpu["unet_noskip"], step=1.0), \
        preflight.estimate_seconds(*cpu["unet"], step=1.0)
    # 64 / 2 = 32 steps an epoch for 50 epochs, plus evaluations of whole images (the training and
    # held-out eyes, every run alike)
    assert 1600 <= short < 2400 and reference == short
    gpu = registry.plan("gpu", "absent", "data")
    assert preflight.estimate_seconds(*gpu["unet"], step=1.0) >= 40 * 40  # 40 epochs of 40 whole-image batches


def test_the_gpu_plan_runs_as_a_dry_run_on_this_machine(retina, pathmnist_dir, tmp_path):
    """The command a GPU machine will run, made tiny: every script and option of the plan
    is exercised before a GPU is used."""
    experiments.main(["--profile", "gpu", "--dry_run", "--data", str(retina), "--data_dir", str(pathmnist_dir),
                      "--runs", str(tmp_path), "--seeds", "43", "--jobs", "2",
                      "--only", "unet_noskip_seed43", "mlp"])
    root = tmp_path / "gpu-dry"
    for name in ("unet_noskip_seed43", "mlp"):
        results = json.loads((root / name / "results.json").read_text())
        assert results["config"]["epochs"] == 1, name
    assert json.loads((root / "unet_noskip_seed43" / "results.json").read_text())["config"]["seed"] == 43
    summary = json.loads((root / "summary.json").read_text())["runs"]
    assert all(state.startswith("done") for state in summary.values()), summary


def test_seeds_repeat_only_the_problem_4_runs():
    runs = registry.plan("gpu", "D", "d", seeds=[43, 44])
    assert {"unet_seed43", "unet_seed44", "aug_affine_seed44", "lr_1e-3_seed43"} <= set(runs)
    assert "mlp_seed43" not in runs and "convolution_seed43" not in runs
    assert runs["unet_seed44"][1][-2:] == ["--seed", "44"]


def test_runs_side_by_side_share_the_cpu_cores(tmp_path, monkeypatch):
    """--jobs N: each run gets cores / N threads (OMP_NUM_THREADS), instead of all of them, and
    on a CPU the execution measured once with that many threads as explicit flags (runs side
    by side would each measure, and doubt, their choice beside the others)."""
    seen, measured = {}, []

    def fake_run(cmd, stdout, stderr, env):
        seen[cmd[-1]] = env.get("OMP_NUM_THREADS"), cmd[cmd.index("--amp") + 1] if "--amp" in cmd else None
        Path(cmd[-1], "results.json").write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    def fake_fixed(script, arguments, device, threads=None):
        measured.append(threads)
        return ["--amp", "bf16", "--channels_last", "off"]

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(runner, "fixed_execution", fake_fixed)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(runner.torch.cuda, "device_count", lambda: 0)  # a CPU machine, wherever the test runs
    todo = {name: ("main_segmentation.py", []) for name in ("a", "b", "c")}
    states = runner.make_runs(todo, tmp_path, 4, "test")
    assert set(states) == {"a", "b", "c"} and set(seen.values()) == {("4", "bf16")} and measured == [4, 4, 4]
    runner.make_runs({"d": ("main_segmentation.py", [])}, tmp_path, 1, "test")
    assert seen[str(tmp_path / "d")] == (None, None)  # one run at a time keeps PyTorch's default and measures


def test_the_lease_plan_makes_the_most_valuable_runs_first():
    """One seed of every Problem 4 comparison, then seeds of 4.3, 4.1, 4.4 and the sweep,
    then the recipe candidates, then the rest of the gpu profile; nothing twice, nothing lost."""
    lease = registry.lease_plan("D", seeds=(43, 44))
    names = list(lease)
    first = ["unet", "unet_noskip", *(f"lr_{lr}" for lr in registry.LEARNING_RATES),
             *(f"aug_{s}" for s in registry.STRATEGIES), "smp_pretrained", "smp_scratch",
             "smp_pretrained_quarter", "smp_scratch_quarter"]
    assert names[:len(first)] == first
    assert len(names) == len(set(names)) and set(registry.plan("gpu", "D", "data")) <= set(names)
    seeded = {name.split("_seed")[0] for name in names if "_seed" in name}
    assert seeded == {*registry.runs_of("4.2", "gpu"), *registry.runs_of("4.3", "gpu"), "unet", "unet_noskip",
                      "smp_pretrained", "smp_scratch"}
    position = {name: i for i, name in enumerate(names)}
    assert position["aug_combined_seed44"] < position["unet_noskip_seed43"] < position["smp_scratch_seed44"] \
        < position["lr_1e-1_seed43"] < position["recipe_affine"] < position["mlp"]
    # 4.2 is Adam at every rate; the recipe candidates choose on held-out training eyes
    assert all(lease[f"lr_{lr}"][1][-4:] == ["--optimizer", "adam", "--lr", lr] for lr in registry.LEARNING_RATES)
    for name in ("recipe_affine", "recipe_combined"):
        arguments = lease[name][1]
        assert arguments[arguments.index("--val_fraction") + 1] == "0.2" and "imagenet" in arguments
    assert "recipe_affine" not in registry.plan("cpu", "D", "data")  # the recipe needs the assignment's scale


def test_the_recipe_is_chosen_on_held_out_eyes_never_on_test(tmp_path):
    assert registry.choose_recipe(tmp_path) is None
    for name, validation, test in (("recipe_affine", [0.70, 0.78], 0.70), ("recipe_combined", [0.75, 0.76], 0.90)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"evaluated_on": "validation", "valid_dice_thresholded": validation, "final_metrics": {"dice": test}}))
    assert registry.choose_recipe(tmp_path) == "recipe_affine"


def test_pathmnist_runs_are_recorded_not_run_on_an_offline_gpu_machine(tmp_path, monkeypatch, offline):
    from medimg import preflight
    monkeypatch.setattr(preflight.torch.cuda, "is_available", lambda: True)
    plan = registry.lease_plan(str(tmp_path), seeds=())
    todo, not_run = runner.check_and_estimate({k: plan[k] for k in ("mlp", "mobilenet", "mobilenet_probs")},
                                              tmp_path / "runs", "gpu", estimate=False)
    assert todo == {} and all("zenodo.org is unreachable" in reason for reason in not_run.values())


def test_a_plan_is_estimated_from_one_measured_step_per_workload(monkeypatch, tmp_path):
    """Runs that differ only in what a training step does not see (seed, rate, augmentation,
    --show_augmentations) share one measurement; another model or batch shape is measured."""
    from medimg import preflight
    measured = []
    monkeypatch.setattr(preflight, "step_seconds",
                        lambda script, arguments, device: measured.append(arguments) or 0.01)
    plan = registry.lease_plan(str(tmp_path), seeds=(43,))
    todo = {k: plan[k] for k in ("unet", "lr_1e-3", "aug_elastic", "aug_affine_seed43", "smp_scratch", "convolution")}
    total, per_run = runner.estimate_plan(todo, torch.device("cpu"))
    assert len(measured) == 2 and set(per_run) == set(todo)
    assert total == pytest.approx(sum(per_run.values())) and per_run["convolution"] == preflight.CONVOLUTION_SECONDS
    assert runner.measurement_key(*plan["aug_elastic"]) == runner.measurement_key(*plan["unet"])
    assert runner.measurement_key(*plan["unet"])[0] == "unet batch 2 512x512"


def test_collect_runs_copies_finished_runs_without_weights(tmp_path, capsys):
    from tools import collect_runs
    source, destination = tmp_path / "exp", tmp_path / "runs"
    for name, files in {"done": ["results.json", "log.txt", "model.pt", "execution.json", "curves.png",
                                 ".model.pt.x1.tmp", "augmentations.png"],
                        "convolution": ["convolution_timings.json"],
                        "in_flight": ["results.json", "log.txt", "checkpoint.pt", "execution.json"],
                        "started": ["log.txt"],
                        "there": ["results.json"]}.items():
        (source / name).mkdir(parents=True)
        for f in files:
            (source / name / f).write_text(f)
    for name, f in (("there", "results.json"), ("done", "not_run.json")):  # committed: a result, a not-run record
        (destination / name).mkdir(parents=True)
        (destination / name / f).write_text("committed")
    collect_runs.main([str(source), str(destination)])
    assert capsys.readouterr().out.split() == ["convolution", "done"]
    assert sorted(p.name for p in (destination / "done").iterdir()) == ["curves.png", "log.txt", "results.json"]
    # a seed copy's panel of test predictions stays behind (the first seed's shows the configuration)
    for name in ("panel", "panel_seed43"):
        (source / name).mkdir()
        for f in ("results.json", "predictions.png", "example_01_test_prediction.png"):
            (source / name / f).write_text(f)
    collect_runs.main([str(source), str(destination)])
    assert capsys.readouterr().out.split() == ["panel", "panel_seed43"]
    assert (destination / "panel" / "predictions.png").exists() and not (destination / "panel_seed43" / "predictions.png").exists()
    assert (destination / "panel_seed43" / "example_01_test_prediction.png").exists()
    assert not (destination / "in_flight").exists() and not (destination / "started").exists()
    assert (destination / "there" / "results.json").read_text() == "committed"
    for name, code in (("new_code", "b4b9d8dfab2d" + "0" * 52), ("old_code", "0fc2aaec3aa5" + "0" * 52)):
        (source / name).mkdir()
        (source / name / "results.json").write_text(json.dumps({"code_fingerprint": {"sha256": code}}))
    collect_runs.main([str(source), str(destination), "--made_by", "b4b9d8dfab2d"])
    assert capsys.readouterr().out.split() == ["new_code"] and not (destination / "old_code").exists()
    # a run moved on to runs/cpu is not copied back; a namesake there made by other code does not stop it
    moved, new_code = tmp_path / "cpu", json.dumps({"code_fingerprint": {"sha256": "b4b9d8dfab2d" + "0" * 52}})
    for name, record in (("moved", new_code), ("patch_namesake", json.dumps({"code_fingerprint": {"sha256": "0" * 64}}))):
        for root in (source, moved):
            (root / name).mkdir(parents=True)
            (root / name / "results.json").write_text(new_code if root == source else record)
    collect_runs.main([str(source), str(destination), "--made_by", "b4b9d8dfab2d", "--moved_to", str(moved)])
    assert capsys.readouterr().out.split() == ["patch_namesake"] and not (destination / "moved").exists()
    for missing in ([str(tmp_path / "missing"), str(destination)], [str(source), str(tmp_path / "missing")]):
        with pytest.raises(collect_runs.UserError, match="no such folder"):
            collect_runs.main(missing)
