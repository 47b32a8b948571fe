"""The report compares the arms of a Problem 4 comparison only when one version of the code
made them all (``report.logs.comparable``): arms whose code fingerprints differ are said in one
line, named, and left out of the answer, never compared and never a traceback."""
from medimg import registry
from report import logs


def finished(fingerprint=None, commit="abc1234", seed=42):
    run = {"status": "done", "project_version": commit, "config": {"seed": seed}}
    if fingerprint:
        run["code_fingerprint"] = {"sha256": fingerprint * 16, "files": ["main_segmentation.py"]}
    return run


def test_arms_made_by_one_version_are_compared():
    runs = {"unet": finished("aaaa"), "unet_noskip": finished("aaaa"), "unet_seed43": finished("aaaa", seed=43),
            "lr_1e-3": finished("bbbb")}  # another comparison's run may come from other code
    said = []
    assert logs.comparable(runs, "4.1", say=said.append) is runs and said == []


def test_arms_made_by_different_code_are_named_and_left_out(capsys):
    runs = {"unet": finished("aaaa"), "unet_noskip": finished("aaaa"), "unet_noskip_seed43": finished("cccc", seed=43),
            "lr_1e-3": finished("bbbb")}
    kept = logs.comparable(runs, "4.1")
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("4.1 not compared")
    assert "unet, unet_noskip: " + "aaaa" * 3 in line and "unet_noskip_seed43: " + "cccc" * 3 in line
    assert all(not logs.done(kept[name]) and kept[name]["reason"] == line
               for name in ("unet", "unet_noskip", "unet_noskip_seed43"))
    assert kept["lr_1e-3"] is runs["lr_1e-3"] and logs.done(runs["unet"])  # nothing else touched, no copy changed


def test_runs_logged_before_fingerprints_compare_by_their_recorded_commit():
    same = {"aug_none": finished(commit="610de4f"), "aug_affine": finished(commit="610de4f")}
    assert logs.mixed_code(same, "4.3") is None
    mixed = {"aug_none": finished(commit="6cad1c7+changes"), "aug_affine": finished(commit="3d2f1e7+changes"),
             "aug_color": finished("dddd")}
    problem = logs.mixed_code(mixed, "4.3")
    assert "commit 6cad1c7+changes" in problem and "commit 3d2f1e7+changes" in problem and "dddd" in problem
    # uncommitted edits: one version only within one session of one machine (one copy of the tree)
    session = lambda started, host="vm": {"machine": {"hostname": host}, "started": started}
    lease = {"unet": {**finished(commit="610de4f+changes"), **session("2026-11-26T18:28:58+00:00")},
             "unet_noskip": {**finished(commit="610de4f+changes"), **session("2026-11-26T18:30:29+00:00")}}
    assert logs.mixed_code(lease, "4.1") is None
    lease["unet_noskip"].update(session("2026-11-27T09:30:29+00:00"))
    assert logs.mixed_code(lease, "4.1") is not None
    # and a run that recorded nothing is never taken for another's code
    unknown = {"unet": {**finished(), "project_version": None, "folder": "runs/cpu/unet"},
               "unet_noskip": {**finished(), "project_version": None, "folder": "runs/cpu/unet_noskip"}}
    assert logs.mixed_code(unknown, "4.1") is not None


def test_a_comparison_is_answered_only_with_every_seed_of_every_arm():
    runs = {"unet": finished("aaaa"), "unet_seed43": finished("aaaa", seed=43), "unet_seed44": finished("aaaa", seed=44),
            "unet_noskip": finished("aaaa"), "unet_noskip_seed44": finished("aaaa", seed=44)}
    said = []
    kept = logs.comparable(runs, "4.1", seeds=(42, 43, 44), say=said.append)
    assert said == ["4.1 not answered yet: unet_noskip lacks seed 43"]
    assert not any(logs.done(kept[key]) for key in runs)
    runs["unet_noskip_seed43"] = finished("aaaa", seed=43)
    assert logs.comparable(runs, "4.1", seeds=(42, 43, 44), say=said.append) is runs


def seeded(names, seeds=(42, 43, 44), fingerprint="aaaa"):
    return {(name if seed == 42 else f"{name}_seed{seed}"): finished(fingerprint, seed=seed)
            for name in names for seed in seeds}


def test_the_fifth_strategy_without_its_seeds_is_left_out_and_the_rest_compared():
    """4.3's fifth strategy comes after 4.4 in the plan's seeds: until they are made, 4.3 compares
    no augmentation and the four others, and says which is left out; any other arm lacking a
    seed still holds the whole answer back."""
    strategies = registry.COMPARISONS["4.3"]
    fifth = registry.LEFT_OUT_UNTIL_SEEDED["4.3"][0]
    assert fifth == strategies[-1] and strategies[0] == "aug_none"
    runs = {**seeded(strategies[:-1]), fifth: finished("aaaa")}
    said = []
    kept = logs.comparable(runs, "4.3", (42, 43, 44), say=said.append)
    assert not logs.done(kept[fifth]) and "43, 44" in kept[fifth]["reason"]
    assert all(kept[key] is runs[key] for key in runs if key != fifth)
    assert len(said) == 1 and fifth in said[0] and "left out" in said[0]
    del runs["aug_affine_seed44"]  # one of the first four lacks a seed: nothing is compared
    kept = logs.comparable(runs, "4.3", (42, 43, 44), say=said.append)
    assert not any(logs.done(kept[key]) for key in runs) and "aug_affine lacks seed 44" in said[-1]
    # the left-out arm is not compared, so other code in its one run does not hold the rest back
    runs = {**seeded(strategies[:-1]), fifth: finished("bbbb")}
    kept = logs.comparable(runs, "4.3", (42, 43, 44), say=said.append)
    assert logs.done(kept["aug_none"]) and not logs.done(kept[fifth])


def test_a_reference_of_another_comparison_is_read_only_when_made_alike():
    """4.4 sets its arms against the course UNet (registry.REFERENCES) only where its runs have
    the arms' seeds, code and training setup (every seed's); otherwise the course UNet alone is
    left out of 4.4's answer, said in one line, and 4.4 is still answered."""
    assert registry.REFERENCES["4.4"] == ("unet",)
    setup = {"crop_size": 0, "image_size": 256, "val_fraction": 0.2, "lr": 1e-4}

    def plan(reference_code="aaaa", reference_seeds=(42, 43, 44), **reference_setup):
        runs = {}
        for name in registry.COMPARISONS["4.4"]:
            for seed in (42, 43, 44):
                run = finished("aaaa", seed=seed)
                run["config"].update(setup)
                runs[name if seed == 42 else f"{name}_seed{seed}"] = run
        for seed in reference_seeds:
            run = finished(reference_code, seed=seed)
            run["config"].update({**setup, **reference_setup})
            runs["unet" if seed == 42 else f"unet_seed{seed}"] = run
        return runs

    said = []
    kept = logs.comparable(plan(), "4.4", seeds=(42, 43, 44), say=said.append)
    assert said == [] and all(logs.done(kept[k]) for k in ("unet", "unet_seed43", "unet_seed44"))
    for runs, why in ((plan(reference_seeds=(42, 43)), "unet has seeds 42, 43, its arms 42, 43, 44"),
                      (plan(reference_seeds=(42, 43, 44, 45)), "unet has seeds 42, 43, 44, 45, its arms 42, 43, 44"),
                      (plan(reference_code="bbbb"), "unet was made by other code than 4.4's arms"),
                      (plan(crop_size=128), "unet was trained otherwise than smp_pretrained (crop_size)")):
        said = []
        kept = logs.comparable(runs, "4.4", seeds=(42, 43, 44), say=said.append)
        assert said == [f"4.4: not set against unet: {why}"]
        assert not any(logs.done(kept[k]) for k in kept if k.startswith("unet"))
        assert all(logs.done(kept[k]) for k in kept if k.startswith("smp_"))  # 4.4 itself is answered
        assert all(logs.done(runs[k]) for k in runs)  # the runs themselves untouched
