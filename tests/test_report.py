"""report/build.py on the committed run logs: it builds, every number it writes comes from
the logs, the registry is its only list of runs, and a claim the logs contradict stops it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import experiments
from medimg import registry
from report import answers, build, logs

ROOT = Path(__file__).resolve().parents[1]


def copy_committed_runs(into):
    """A copy of the committed logs (runs/cpu, and runs/gpu beside it), without the large figures
    and without runs/human_baseline.json; returns its runs/cpu."""
    for profile in ("cpu", "gpu"):
        if (ROOT / "runs" / profile).is_dir():
            shutil.copytree(ROOT / "runs" / profile, into / "runs" / profile,
                            ignore=shutil.ignore_patterns("*.pt", "log.txt"))
    return into / "runs" / "cpu"


@pytest.fixture
def committed_runs(tmp_path):
    return copy_committed_runs(tmp_path)


@pytest.fixture(scope="module")
def built_from_committed_logs(tmp_path_factory):
    """The report built once from a copy of the committed logs: ``(runs/cpu of the copy, the
    PDF, numbers.json)``, for the tests that only read what that build wrote."""
    tmp = tmp_path_factory.mktemp("committed")
    runs = copy_committed_runs(tmp)
    build.main(["--runs", str(runs), "--out", str(tmp / "report.pdf")])
    return runs, tmp / "report.pdf", json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())


def test_the_report_builds_from_the_committed_logs(built_from_committed_logs):
    committed_runs, pdf, numbers = built_from_committed_logs
    assert pdf.read_bytes()[:5] == b"%PDF-"
    cited = {row["name"]: row.get("dice") for row in numbers["seg_rows"]}
    for name, run in registry.runs().items():
        results = committed_runs / name / "results.json"
        if run.script == "main_segmentation.py" and results.exists():
            # every finished run's final thresholded Dice is in the table, to three decimals
            assert cited[name] == f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}"
    # ... and every seed copy's in the augmentation table (where 4.3 is answered: all its runs made
    # by one version of the code), every run of the other profile's in its table
    if numbers["p4_3"]["done"]:
        by_seed = " ".join(row["runs"] for row in numbers["p4_3"]["rows"])
        for results in committed_runs.glob("aug_*_seed*/results.json"):
            assert f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}" in by_seed
    # every run at the assignment's scale (runs/gpu, seed copies included) is cited with its Dice
    # the sweep's 1e-4 is set beside the reference UNet exactly when the two share a setting
    settings = numbers["settings"]
    assert ("versus_reference" in numbers["p4_2"]) == (settings["reference"]["whole"] == settings["4.2"]["whole"])
    scale = {row["name"]: row["dice"] for row in numbers["scale"].get("rows", [])}
    for results in (committed_runs.parent / "gpu").glob("*/results.json"):
        assert scale[results.parent.name] == f"{json.loads(results.read_text())['final_metrics']['dice']:.3f}"


def test_the_main_text_fits_its_pages_and_no_table_of_runs_is_split(built_from_committed_logs):
    """Problems 1-4 and the conclusion end by page MAIN_TEXT_PAGES, and each of the appendix's
    tables of runs (one a question) lies whole on one page, none of its rows below the text's
    bottom margin, as the compiled PDF places them."""
    layout = json.loads((ROOT / "report" / "generated" / "layout.json").read_text())
    assert 5 <= layout["main_text_pages"] <= build.MAIN_TEXT_PAGES
    tables = layout["run_tables"]
    assert sum(t["rows"] for t in tables.values()) == len(built_from_committed_logs[2]["seg_rows"])
    assert all(len(t["pages"]) == 1 and t["off_page"] == 0 for t in tables.values()), tables


def test_the_layout_check_finds_a_table_that_runs_off_its_page_or_splits(monkeypatch):
    """layout() reads where the compiled report put each row of the tables of runs and counts, per
    table, the rows that start below the text's bottom margin (a table too tall for its page, as
    an unbreakable figure overflows) and the pages its rows lie on (two, were a table let break)."""
    import typst
    rows = [{"label": "<run-row>", "value": {"table": "4.1", "page": 15, "y": 700.0}},
            {"label": "<run-row>", "value": {"table": "4.1", "page": 15, "y": build.TEXT_BOTTOM_PT + 5}},
            {"label": "<run-row>", "value": {"table": "4.2", "page": 15, "y": 760.0}},
            {"label": "<run-row>", "value": {"table": "4.2", "page": 16, "y": 60.0}},
            {"label": "<run-row>", "value": {"table": "4.4", "page": 16, "y": 100.0}},
            {"label": "<main-text-end>", "value": 13}]
    monkeypatch.setattr(typst, "query", lambda *args, **kwargs: json.dumps(rows))
    placed = build.layout()
    assert placed["main_text_pages"] == 13
    assert placed["run_tables"]["4.1"] == {"rows": 2, "pages": [15], "off_page": 1}
    assert placed["run_tables"]["4.2"] == {"rows": 2, "pages": [15, 16], "off_page": 0}
    assert placed["run_tables"]["4.4"] == {"rows": 1, "pages": [16], "off_page": 0}


def stated_interval(D, level=0.95):
    """The report's stated rule (its Section 4, 'Comparing two configurations'), written from
    its words: the two-way random-effects variance of the mean with Satterthwaite's degrees of
    freedom; where it is not positive or leaves fewer than 2 degrees of freedom, the same without
    the residual term (marked with a dagger). Returns (mean, low, high, dagger)."""
    from scipy import stats as scipy_stats
    S, I = D.shape
    m = D.mean()
    terms = [(I * ((D.mean(1) - m) ** 2).sum() / (S - 1), S - 1),
             (S * ((D.mean(0) - m) ** 2).sum() / (I - 1), I - 1)]
    residual = D - D.mean(1)[:, None] - D.mean(0)[None, :] + m
    with_residual = terms + [(-(residual ** 2).sum() / ((S - 1) * (I - 1)), (S - 1) * (I - 1))]
    total = sum(ms for ms, _ in with_residual)
    df = total ** 2 / sum(ms ** 2 / k for ms, k in with_residual) if total > 0 else 0
    dagger = total <= 0 or df < 2
    if dagger:
        total = sum(ms for ms, _ in terms)
        if total == 0:  # every cell alike: nothing left to count
            return m, m, m, dagger
        df = total ** 2 / sum(ms ** 2 / k for ms, k in terms)
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * np.sqrt(total / (S * I))
    return m, m - half, m + half, dagger


def test_every_printed_interval_follows_the_stated_rule_from_the_logs(built_from_committed_logs):
    """Each interval the report prints, recomputed from the per-image test Dice in the runs'
    results.json files (not through report/stats.py) by the rule the report states, clipped to
    the range of its contrast."""
    runs, _, numbers = built_from_committed_logs

    def dice(name):  # seed -> {image: Dice}
        return {seed: json.loads((runs / registry.copy_name(name, seed) / "results.json")
                                 .read_text())["final_metrics"]["per_image_dice"] for seed in (42, 43, 44)}

    def printed(x):
        return float(x.replace("\u2212", "-"))

    contrasts = []  # (what the report printed, {run: weight})
    if numbers["p4_1"]["done"]:
        contrasts.append((numbers["p4_1"]["difference"], {"unet_noskip": 1, "unet": -1}))
    if numbers["p4_2"]["done"]:
        best = next(r["name"] for r in numbers["p4_2"]["rows"] if r["difference"] is None)
        contrasts += [(r["difference"], {r["name"]: 1, best: -1}) for r in numbers["p4_2"]["rows"] if r["difference"]]
        if "versus_reference" in numbers["p4_2"]:
            v = numbers["p4_2"]["versus_reference"]
            contrasts.append((v["difference"], {v["row"]["name"]: 1, "unet": -1}))
    if numbers["p4_3"]["done"]:
        contrasts += [(r["difference"], {r["name"]: 1, "aug_none": -1}) for r in numbers["p4_3"]["rows"] if r["difference"]]
    if numbers["p4_4"]["done"]:
        q = numbers["p4_4"]["quarter"]
        contrasts += [(numbers["p4_4"]["gain"], {"smp_pretrained": 1, "smp_scratch": -1}),
                      (q["gain"], {"smp_pretrained_quarter": 1, "smp_scratch_quarter": -1}),
                      (q["gain_grows"], {"smp_pretrained_quarter": 1, "smp_scratch_quarter": -1,
                                         "smp_pretrained": -1, "smp_scratch": 1})]
        contrasts += [(d, {f"{name}_quarter": 1, name: -1}) for name, d in q["less_data"].items()]
        if "course" in numbers["p4_4"]:  # the course UNet from scratch, which 4.4 sets its arms against
            c = numbers["p4_4"]["course"]
            contrasts += [(c["pretrained"], {"smp_pretrained": 1, "unet": -1}), (c["scratch"], {"smp_scratch": 1, "unet": -1})]
    assert len(contrasts) >= 4  # the committed logs answer 4.1, 4.2 and 4.4

    def thin(name, kind):  # seed -> {image: recall of that kind}, from tools/thin_vessels.py's file
        return {seed: {image: v[f"{kind}_recall"] for image, v in json.loads(
            (runs / registry.copy_name(name, seed) / "thin_vessels.json").read_text())["per_image"].items()
            if v["thin_recall"] is not None and v["thick_recall"] is not None} for seed in (42, 43, 44)}

    def matrix(weights, table=dice):  # D[seed, image] of a contrast, and the range it can take
        tables = {name: table(name) for name in weights}
        images = sorted(next(iter(tables.values()))[42])
        D = sum(w * np.array([[tables[name][seed][i] for i in images] for seed in (42, 43, 44)])
                for name, w in weights.items())
        return D, (sum(min(w, 0) for w in weights.values()), sum(max(w, 0) for w in weights.values()))
    checks = [(shown, *matrix(weights)) for shown, weights in contrasts]
    # the thin-vessel measures (4.1, 4.3, 4.4): differences of recall, and the shares kept (not clipped)
    for key, reference in (("p4_1", "unet"), ("p4_3", "aug_none"), ("p4_4", "smp_scratch")):
        for name, row in (numbers[key].get("thin") or {"rows": {}})["rows"].items():
            if name == reference:
                continue
            for kind, shown in (("thin", row["difference"]), ("thick", row.get("thick_difference"))):
                if shown:
                    checks.append((shown, *matrix({name: 1, reference: -1}, lambda n: thin(n, kind))))
            if row.get("kept_less"):
                mine, theirs = {k: thin(name, k) for k in ("thin", "thick")}, {k: thin(reference, k) for k in ("thin", "thick")}
                images = sorted(i for i in theirs["thin"][42] if all(theirs[k][s][i] > 0 for k in mine for s in (42, 43, 44)))
                D = np.array([[mine["thin"][s][i] / theirs["thin"][s][i] - mine["thick"][s][i] / theirs["thick"][s][i]
                               for i in images] for s in (42, 43, 44)])
                checks.append((row["kept_less"], D, (-np.inf, np.inf)))

    def printed_intervals(x):  # every interval anywhere in numbers.json
        if isinstance(x, dict):
            here = [(x["mean"], x["low"], x["high"])] if {"mean", "low", "high", "rule"} <= x.keys() else []
            return here + [i for v in x.values() for i in printed_intervals(v)]
        return [i for v in x for i in printed_intervals(v)] if isinstance(x, list) else []
    assert set(printed_intervals(numbers)) == {(d["mean"], d["low"], d["high"]) for d, _, _ in checks}
    for shown, D, (lowest, highest) in checks:
        mean, low, high, dagger = stated_interval(D)
        low, high = max(low, lowest), min(high, highest)
        for value, text in ((mean, shown["mean"]), (low, shown["low"]), (high, shown["high"])):
            assert abs(value - printed(text)) <= 0.0005 + 1e-9, (shown, text, value)
        assert (shown["rule"] == "upper bound") == dagger, shown
        if "family" in shown:  # and at the Bonferroni level of its question's family, where the text quotes that interval
            _, low, high, _ = stated_interval(D, 1 - 0.05 / shown["family"])
            low, high = max(low, lowest), min(high, highest)
            for value, text in ((low, shown["family_low"]), (high, shown["family_high"])):
                assert abs(value - printed(text)) <= 0.0005 + 1e-9, (shown, shown["family"], text, value)


def test_a_comparison_is_answered_exactly_when_its_arms_have_every_seed_from_one_code(built_from_committed_logs):
    """Read from the results.json files themselves, not through report.logs: the report answers
    a Problem 4 comparison on the CPU if and only if every arm has the cpu plan's seeds of that
    question (42, 43 and 44; 4.3 also 45 and 46) and all its runs carry one code fingerprint (4.3's fifth strategy may wait for its seeds: it is
    then left out, and its one run is not read)."""
    committed_runs, _, numbers = built_from_committed_logs
    for question, key in (("4.1", "p4_1"), ("4.2", "p4_2"), ("4.3", "p4_3"), ("4.4", "p4_4")):
        arms, seeds, fingerprints = registry.COMPARISONS[question], {}, set()
        planned = {registry.FIRST_SEED, *registry.seeds_of("cpu", question)}
        fifth = registry.LEFT_OUT_UNTIL_SEEDED.get(question, ())
        if fifth and len(list(committed_runs.glob(f"{fifth[0]}*/results.json"))) < len(planned):
            arms = [name for name in arms if name not in fifth]
            assert not numbers[key]["done"] or [l["strategy"] for l in numbers[key]["left_out"]] == [fifth[0][4:]]
        elif fifth:
            assert not numbers[key]["done"] or numbers[key]["left_out"] == []
        for name in arms:
            for results in [committed_runs / name / "results.json", *committed_runs.glob(f"{name}_seed*/results.json")]:
                if results.exists():
                    record = json.loads(results.read_text())
                    seeds.setdefault(name, set()).add(record["config"]["seed"])
                    fingerprints.add((record.get("code_fingerprint") or {}).get("sha256"))
        answerable = all(seeds.get(name) == planned for name in arms) and len(fingerprints) == 1
        assert numbers[key]["done"] == answerable, (question, seeds, fingerprints)


def complete_plan(committed_runs, shift, seeds=None):
    """``committed_runs`` (a copy of runs/cpu) with every Problem 4 comparison's runs made up,
    whichever of them have been made, with ``seeds`` (default: the cpu plan's seeds of each
    comparison): each seed a copy of the reference UNet's seed-42 log whose per-image test Dice
    are moved by ``shift(name, seed)`` (clipped to [0, 1]); one code fingerprint throughout."""
    reference = json.loads((committed_runs / "unet" / "results.json").read_text())
    for question, names in registry.COMPARISONS.items():
        for name in names:
            for seed in seeds or (registry.FIRST_SEED, *registry.seeds_of("cpu", question)):
                folder = committed_runs / (name if seed == 42 else f"{name}_seed{seed}")
                record = json.loads(json.dumps(reference))
                record["config"]["seed"] = seed
                per_image = {k: min(1.0, max(0.0, v + shift(name, seed)))
                             for k, v in record["final_metrics"]["per_image_dice"].items()}
                record["final_metrics"].update(per_image_dice=per_image, dice=float(np.mean(list(per_image.values()))))
                record["valid_dice_thresholded"][-1] = record["final_metrics"]["dice"]
                if name.startswith("smp"):
                    record.update(model_weights={"encoder": "efficientnet-lite0", "source": "lite0.pth",
                                                 "sha256": "0" * 64, "tensors_loaded": 240},
                                  n_train_fundi=5 if "quarter" in name else 20)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "results.json").write_text(json.dumps(record))
    return committed_runs


FIGURES = ["skip.png", "skip_assignment.png", "lr.png", "augmentation_curves.png", "smp.png", "generalisation.png",
           "convolution_speed.png", "blur.jpg", "edges.jpg", "classification_curves.png",
           *[f"scale_4.{q}.png" for q in (2, 3, 4)], *[f"panel_{k}.png" for k in ("skip", "lr", "augmentation")]]


def test_every_answer_of_problem_4_compiles_once_the_plan_is_complete(committed_runs, monkeypatch, tmp_path):
    """Every comparison answered (its text, tables and intervals), on a made-up complete plan in
    which some arms differ and others do not; the figures are stand-ins (drawn elsewhere)."""
    from PIL import Image

    differs = {"unet_noskip": -0.6, "lr_1e-1": -0.7, "lr_1e-5": -0.65, "aug_affine": -0.1, "aug_camera": 0.05,
               "smp_pretrained": 0.08, "smp_scratch_quarter": -0.2}
    rng = np.random.default_rng(0)
    complete_plan(committed_runs, lambda name, seed: differs.get(name, 0) + rng.normal(0, 0.02))

    def stand_ins(runs, arms, gpu, root, out, numbers):
        for stale in out.glob("*.*"):
            stale.unlink()
        for name in FIGURES:
            Image.new("RGB", (40, 20), "grey").save(out / name)
        numbers["panels"] = {k: {"drawn": [], "image": None, "best_of_seeds": False}
                             for k in ("skip", "lr", "augmentation")}
        numbers["p2_1"]["detail"] = {"blur": 96, "edges": 96}  # the enlarged squares' sides, for the captions
    monkeypatch.setattr(build, "figures_for", stand_ins)
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    assert all(numbers[key]["done"] for key in ("p4_1", "p4_2", "p4_3", "p4_4"))
    assert not numbers["p4_1"]["difference"]["holds_zero"] and numbers["p4_1"]["difference"]["value"] < 0
    assert [r["strategy"] for r in numbers["p4_3"]["better"]] == ["camera"]
    assert [r["strategy"] for r in numbers["p4_3"]["worse"]] == ["affine"]
    assert numbers["p4_4"]["quarter"]["gain"]["value"] > 0 and not numbers["p4_4"]["gain"]["holds_zero"]
    # every interval within what its contrast can take
    def within(d, low, high):
        return low <= float(d["low"].replace("−", "-")) <= float(d["high"].replace("−", "-")) <= high
    rows = [*numbers["p4_1"]["rows"], *numbers["p4_2"]["rows"], *numbers["p4_3"]["rows"], *numbers["p4_4"]["rows"]]
    assert all(within(r["difference"], -1, 1) for r in rows if r["difference"])
    assert within(numbers["p4_4"]["quarter"]["gain_grows"], -2, 2)
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    # before the fifth strategy's seeds: 4.3 compares the others and names it
    fifth = registry.LEFT_OUT_UNTIL_SEEDED["4.3"][0]
    for seed in (43, 44):
        shutil.rmtree(committed_runs / f"{fifth}_seed{seed}")
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    assert numbers["p4_3"]["done"] and numbers["p4_3"]["left_out"] == [{"strategy": fifth[4:], "lacks": [43, 44]}]
    assert numbers["p4_3"]["family"] == {"k": 4, "one_in": 5}  # 1 - 0.95^4 = 0.185
    assert fifth not in [r["name"] for r in numbers["p4_3"]["rows"]] and len(numbers["p4_3"]["rows"]) == 5


def test_the_report_of_the_planned_settings_states_each_and_measures_4_3_on_held_out_eyes(committed_runs, tmp_path):
    """The cpu plan as it will end: 4.1, 4.3 and 4.4 on whole 256-px images with eyes held out
    (copies of the committed runs/cpu/unet, a whole-image run, moved per image; 4.3 and 4.4's quarter arms on
    four eyes for 200 epochs, 4.3 with five seeds as the pilot asked), 4.2 still on patches. The report builds; its protocol reads each
    question's setting from the runs; 4.3 measures each strategy's gap between training and
    held-out eyes; the sweep on patches is not set beside the reference UNet on whole images."""
    whole = json.loads((ROOT / "runs" / "cpu" / "unet" / "results.json").read_text())
    thin = json.loads((ROOT / "runs" / "cpu" / "unet" / "thin_vessels.json").read_text())
    jitter = np.random.default_rng(0)
    shift = {"unet": 0.0, "unet_noskip": -0.1, "aug_none": -0.08, "aug_affine": -0.02, "aug_elastic": -0.08,
             "aug_color": -0.07, "aug_camera": -0.06, "aug_combined": -0.05, "smp_pretrained": 0.08,
             "smp_scratch": -0.02, "smp_pretrained_quarter": 0.05, "smp_scratch_quarter": -0.1}
    for name, moved in shift.items():
        for seed in (registry.FIRST_SEED, *registry.seeds_of("cpu", registry.QUESTION_OF[name])):  # 4.3: five
            record = json.loads(json.dumps(whole))
            record["config"].update(seed=seed, model=name if name.startswith("unet") else "unet")
            if name.startswith("aug_") or name.endswith("quarter"):  # 4 eyes, the same steps
                record["config"].update(train_fraction=0.25, epochs=200, eval_every=20)
                record["n_train_fundi"], record["n_train_images"] = 4, 16
            if name.startswith("aug_"):
                record["config"]["augmentation"] = name[4:]
            if name.startswith("smp"):
                record["config"].update(model="smp_unet", encoder="efficientnet-lite0")
                record["model_weights"] = {"encoder": "efficientnet-lite0", "source": "lite0.pth", "sha256": "0" * 64,
                                           "tensors_loaded": 240}
            if (name, seed) == ("unet_noskip", 44):  # made in a later session, on a CPU with native bf16
                record["execution"] = {**record["execution"], "autocast": "bfloat16"}
            final = record["final_metrics"]
            for key in ("per_image_dice", "per_image_dice_validation", "per_image_dice_train_eyes"):
                # the strategies that regularise lose more on the training eyes than on the others
                lose = 0.05 if key.endswith("train_eyes") and name in ("aug_affine", "aug_combined") else 0.0
                noise = 0.01 if key == "per_image_dice" else 0.0  # test images apart from one another
                final[key] = {k: min(1.0, max(0.0, v + moved - lose - 0.01 * (seed - 42) + jitter.normal(0, noise)))
                              for k, v in final[key].items()}
            final["dice"] = float(np.mean(list(final["per_image_dice"].values())))
            folder = committed_runs / (name if seed == 42 else f"{name}_seed{seed}")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps(record))
            measured = json.loads(json.dumps(thin))  # tools/thin_vessels.py's file, thin recall moved alike
            for v in measured["per_image"].values():
                v["thin_recall"] = min(1.0, max(0.0, v["thin_recall"] + moved + jitter.normal(0, 0.02)))
            (folder / "thin_vessels.json").write_text(json.dumps(measured))
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    settings = numbers["settings"]
    assert settings["reference"] == {"whole": True, "size": 256, "patch": 0, "held_out": 4, "precision": ["float32"],
                                     "mixed_seeds": [], "train_eyes": [16], "eval_every": [5], "eval_steps": [160]}
    # one seed's pair trained in two arithmetics: the protocol says which (the text compiles with it)
    assert settings["4.1"] == {**settings["reference"], "precision": ["bfloat16", "float32"], "mixed_seeds": [44]}
    assert settings["4.3"]["precision"] == ["float32"] and settings["4.3"]["mixed_seeds"] == []
    assert settings["4.3"]["train_eyes"] == [4] and settings["4.3"]["eval_every"] == [20]
    assert settings["4.4"]["train_eyes"] == [4, 16] and settings["4.4"]["eval_steps"] == [160]
    assert settings["4.2"]["patch"] == 128 and not settings["4.2"]["whole"]
    assert "versus_reference" not in numbers["p4_2"]
    p3 = numbers["p4_3"]
    assert [r["n"] for r in p3["rows"]] == [5] * 6  # every arm over its five seeds
    assert p3["done"] and "fit" not in p3 and float(p3["held_out_fit"]["gap"].replace("−", "-")) > 0
    assert [r["strategy"] for r in p3["rows"] if r["fit"].get("narrows")] == ["affine", "combined"]
    # the thin vessels each arm finds, from the runs' saved predictions: without skips fewer
    thin41 = numbers["p4_1"]["thin"]
    assert thin41["share"] == "34" and thin41["rows"]["unet"]["difference"] is None
    assert thin41["rows"]["unet_noskip"]["difference"]["value"] < 0 and not thin41["rows"]["unet_noskip"]["difference"]["holds_zero"]
    # its thick vessels unmoved: the loss is on the thin ones (the share of them kept, less that of the thick)
    kept_less = thin41["rows"]["unet_noskip"]["kept_less"]
    assert kept_less["value"] < 0 and not kept_less["holds_zero"] and thin41["size"] == "256 px"
    assert set(p3["thin"]["rows"]) == {r["name"] for r in p3["rows"]} and p3["thin"]["rows"]["aug_affine"]["difference"]["family"] == 5
    # 4.4 tests its reason on the thin vessels too: the pretrained network finds more of them than its twin from scratch
    assert numbers["p4_4"]["thin"]["rows"]["smp_pretrained"]["difference"]["value"] > 0
    assert set(p3["by_image"]["rows"]) == {r["name"] for r in p3["rows"][1:]} and p3["by_image"]["images"] == 20
    # the plan's final state keeps the main text within its pages too (made-up numbers, the real text's length)
    layout = json.loads((ROOT / "report" / "generated" / "layout.json").read_text())
    assert layout["main_text_pages"] <= build.MAIN_TEXT_PAGES


def test_an_interval_never_leaves_the_range_of_its_contrast(tmp_path):
    """One seed of one arm stuck at 0 makes the seed spread, and the t interval over three seeds,
    wide; quoted, it is clipped to what a difference of Dice can be."""
    from report import answers
    runs = _augmentation_runs(tmp_path, {"none": 0, "camera": [-0.9, 0, 0]})
    d = answers.difference(runs, {"aug_camera": 1, "aug_none": -1})
    from report.stats import contrast_matrix, difference_interval
    raw = difference_interval(contrast_matrix({"f": (1, answers.by_seed(runs, "aug_camera")),
                                               "n": (-1, answers.by_seed(runs, "aug_none"))}))
    assert raw.low < -1  # what the model alone gives
    assert d["low"] == "−1.000" and d["holds_zero"]


BODY_VOCABULARY = [  # how the PDF is made, run plans and tools: not what a report's body talks about
    r"\bprofiles?\b", r"report\.build", r"experiments\.py", r"\btools[/.]", r"gpu_session", r"\bbench",
    r"not made yet", r"how this report was", r"\bbuild(s|ing)? (the|this) (report|pdf)", r"\bcpu\b", r"`gpu`",
    r"runs/(cpu|gpu)", r"numbers\.json", r"--seeds", r"--profile", r"\bSLURM\b"]


def _body_sources():
    """The Typst text of the report's body: everything before the appendices, comments left out."""
    report = (ROOT / "report" / "report.typ").read_text()
    body = report[:report.index("#heading(numbering: none)[References]")] + (ROOT / "report" / "problem4.typ").read_text()
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("//"))


def test_the_body_speaks_of_the_questions_not_of_the_build():
    import re
    body = _body_sources()
    found = {pattern: re.findall(pattern, body) for pattern in BODY_VOCABULARY}
    assert not {p: f for p, f in found.items() if f}


def _embedded_end(line, start):
    """Where the Typst expression embedded at ``line[start] == '#'`` ends: an identifier, then
    any field access, call ``(...)`` or content ``[...]`` directly after it."""
    i = start + 1
    while i < len(line) and (line[i].isalnum() or line[i] in "_-"):
        i += 1
    if line[start + 1:i] in ("if", "for"):  # up to the end of its content blocks, an else included
        while True:
            i = line.find("[", i)
            if i < 0:
                return len(line)
            i = _balanced(line, i)
            if not line[i:].startswith(" else ["):
                return i
            i += len(" else ")
    while i < len(line) and (line[i] in "([" or (line[i] == "." and i + 1 < len(line) and line[i + 1].isalpha())):
        if line[i] == ".":
            i += 1
            while i < len(line) and (line[i].isalnum() or line[i] in "_-"):
                i += 1
            continue
        i = _balanced(line, i)
    return i


def _balanced(line, i):
    """The index after the bracket that closes the one at ``line[i]`` (the line's end if none)."""
    opening, depth = line[i], 0
    close = {"(": ")", "[": "]"}[opening]
    while i < len(line):
        depth += (line[i] == opening) - (line[i] == close)
        i += 1
        if depth == 0:
            break
    return i


def test_no_embedded_value_swallows_a_semicolon():
    """In Typst, ``#x;`` or ``#f(x);`` ends the expression at the semicolon and drops it from the
    text; the sources write ``#x\\;`` instead."""
    for name in ("report.typ", "problem4.typ"):
        for number, line in enumerate((ROOT / "report" / name).read_text().splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            for start in (i for i, c in enumerate(line) if c == "#"):
                end = _embedded_end(line, start)
                assert line[end:end + 1] != ";", f"{name}:{number}: {line.strip()}"


def test_the_registry_is_the_only_list_of_runs(monkeypatch, tmp_path, capsys):
    real = registry.runs

    def with_one_more(profile="cpu"):
        runs = real(profile)
        runs["lr_3e-4"] = registry.Run("lr_3e-4", "4.2", "main_segmentation.py",
                                          ("--optimizer", "adam", "--lr", "3e-4"), "Adam, lr 3e-4")
        return runs

    monkeypatch.setattr(registry, "runs", with_one_more)
    experiments.main(["--profile", "cpu", "--list"])
    assert "--only lr_3e-4" in capsys.readouterr().out
    (tmp_path / "cpu").mkdir()
    runs = logs.load_runs(tmp_path / "cpu")
    assert "lr_3e-4" in runs and runs["lr_3e-4"]["status"] == "not run"
    assert "lr_3e-4" in registry.runs_of("4.2")


def test_a_claim_the_logs_contradict_stops_the_build(committed_runs, tmp_path):
    results = committed_runs.parent / "gpu" / "unet_noskip" / "results.json"
    record = json.loads(results.read_text())
    record["train_whole_dice_thresholded"][-1] = 0.1  # as if it fitted its training eyes worse than the UNet
    results.write_text(json.dumps(record))
    (tmp_path / "old.pdf").write_bytes(b"%PDF- the previous report")
    with pytest.raises(build.UserError, match="without skips fits the training eyes better"):
        build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "old.pdf")])
    assert (tmp_path / "old.pdf").read_bytes() == b"%PDF- the previous report"


def test_without_the_convolution_study_the_build_says_how_to_make_it(committed_runs, tmp_path):
    shutil.rmtree(committed_runs / "convolution")
    with pytest.raises(build.UserError, match="--only convolution"):
        build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    assert not (tmp_path / "report.pdf").exists()


def test_budget_states_what_a_caption_needs():
    run = {"config": {"crop_size": 128, "crops_per_image": 4, "batch_size": 8, "lr": 1e-3, "optimizer": "adamw"},
           "n_train_images": 80, "epochs_completed": 10, "execution": {"autocast": "bfloat16"}, "machine": {}}
    assert logs.budget(run) == {"what": "128-px crops of 80 images, 4 per image per epoch", "batch": 8,
                                "epochs": 10, "steps": 400, "precision": "bfloat16", "lr": 1e-3,
                                "optimizer": "adamw"}


IMAGES = [f"{i:02d}_test" for i in range(1, 21)]


def _seg_run(folder, per_image, seed=42, auc=0.9):
    """A finished segmentation run's record, as far as the Problem 4 answers read it, with
    these thresholded Dice on the 20 test images."""
    dice = float(np.mean(per_image))
    return {"status": "done", "folder": str(folder), "config": {"seed": seed, "crop_size": 0, "batch_size": 2,
                                                                 "lr": 1e-4, "optimizer": "adamw", "epochs": 10},
            "final_metrics": {"dice": dice, "auc": auc, "sensitivity": dice, "loss": 0.4,
                              "per_image_dice": dict(zip(IMAGES, map(float, per_image)))},
            "n_train_images": 80, "epochs_completed": 10, "execution": {"autocast": None}, "machine": {},
            "valid_dice_thresholded": [dice], "evaluated_epochs": [10], "train_losses": [0.5] * 10,
            "valid_losses": [0.4]}


def _augmentation_runs(tmp_path, shifts, seeds=(42, 43, 44), auc=None):
    """Every run of Problem 4.3 with ``seeds``: strategy ``s`` scores no augmentation's Dice on
    each image plus ``shifts[s]`` (a number, or one per seed), plus noise that moves each run as
    a whole and each of its images (sd 0.01 each); every other run not made."""
    rng = np.random.default_rng(0)
    image_effect = rng.uniform(0.5, 0.8, 20)
    runs = {}
    for strategy, shift in shifts.items():
        for k, seed in enumerate(seeds):
            delta = shift[k] if isinstance(shift, (list, tuple)) else shift
            values = np.clip(image_effect + delta + rng.normal(0, 0.01) + rng.normal(0, 0.01, 20), 0, 1)
            key = f"aug_{strategy}" if seed == 42 else f"aug_{strategy}_seed{seed}"
            runs[key] = _seg_run(tmp_path, values, seed, auc=(auc or {}).get(strategy, 0.9))
    for name in registry.runs():
        runs.setdefault(name, {"status": "not run"})
    return runs


def test_every_strategy_is_compared_with_none_image_by_image_and_seed_by_seed(tmp_path):
    from report import answers
    from report.stats import contrast_matrix, difference_interval
    # camera and color move every seed alike; the others move the seeds apart, not on average
    runs = _augmentation_runs(tmp_path, {"none": 0, "camera": 0.2, "affine": [0.05, -0.05, 0], "color": -0.2,
                                         "elastic": [-0.04, 0.04, 0.002], "combined": [0.03, 0, -0.03]})
    numbers = answers.problem_4_3(runs)["numbers"]
    assert [r["strategy"] for r in numbers["better"]] == ["camera"]
    assert [r["strategy"] for r in numbers["worse"]] == ["color"]
    assert set(numbers["untold"]) == {"affine", "elastic", "combined"}
    ranking = [r["strategy"] for r in numbers["ranking"]]
    assert ranking[0] == "camera" and ranking[-1] == "color" and "none" in ranking
    rows = {row["strategy"]: row for row in numbers["rows"]}
    assert rows["none"]["difference"] is None and rows["camera"]["seeds"] == [42, 43, 44]
    by_seed = lambda name: {s: runs[k] for k in runs if k.startswith(name) and runs[k].get("status") == "done"
                            for s in [runs[k]["config"]["seed"]]}
    D = contrast_matrix({"camera": (1, by_seed("aug_camera")), "none": (-1, by_seed("aug_none"))})
    expected = difference_interval(D)
    got = rows["camera"]["difference"]
    assert got["value"] == pytest.approx(expected.mean) and float(got["low"].replace("−", "-")) == pytest.approx(
        expected.low, abs=6e-4)


def test_seeds_that_end_on_the_plateau_or_at_chance_are_counted(tmp_path):
    """A seed that never leaves the all-background output is counted where it ends, not
    averaged in silence: ``plateau`` where it ranks vessels (AUC of at least 0.6), else ``chance``."""
    from report import answers
    runs = _augmentation_runs(tmp_path, {"none": 0, "camera": 0, "affine": [-0.9, -0.9, 0], "color": 0, "elastic": 0,
                                         "combined": 0})
    runs["aug_affine"]["final_metrics"].update(dice=0.0, auc=0.7)
    runs["aug_affine_seed43"]["final_metrics"].update(dice=0.0, auc=0.5)
    rows = {row["strategy"]: row for row in answers.problem_4_3(runs)["numbers"]["rows"]}
    assert rows["affine"]["states"] == {"segments": 1, "plateau": 1, "chance": 1}
    assert rows["none"]["states"] == {"segments": 3, "plateau": 0, "chance": 0}


def test_the_first_epoch_with_vessels_ignores_the_constant_all_vessel_output():
    run = {"evaluated_epochs": [2, 4, 6, 8], "valid_dice_thresholded": [0.0, 0.161, 0.0, 0.3]}
    assert logs.first_vessel_epoch(run, all_vessel=0.161) == 8
    assert logs.first_vessel_epoch(run) == 4
    assert logs.first_vessel_epoch({"evaluated_epochs": [2], "valid_dice_thresholded": [0.0]}) is None


def test_a_run_evaluated_on_held_out_eyes_is_judged_against_those_eyes():
    """First vessels against the all-vessel Dice of the images the curve measures (each seed's
    own held-out eyes), the end state against the test images'; figures name what they show."""
    from report import answers, plots
    run = {"evaluated_on": "validation", "evaluated_epochs": [5, 10, 15], "valid_dice_thresholded": [0.0, 0.30, 0.45],
           "baselines": {"all_vessel_dice": 0.161, "evaluation_all_vessel_dice": 0.30},
           "final_metrics": {"dice": 0.17, "auc": 0.9}}
    assert logs.first_vessel_epoch(run) == 15  # 0.30 is every pixel called a vessel on those eyes
    assert answers.end_state(run) == "plateau"  # 0.17 on the test images is their all-vessel output
    run["final_metrics"]["dice"] = 0.30
    assert answers.end_state(run) == "segments"
    on_test = {"evaluated_epochs": [5], "valid_dice_thresholded": [0.161], "baselines": {"all_vessel_dice": 0.161}}
    assert logs.first_vessel_epoch(on_test) is None
    assert plots.evaluated_on([run]) == "held-out" and plots.evaluated_on([on_test]) == "test"
    with pytest.raises(ValueError, match="mixes"):
        plots.evaluated_on([run, on_test])


def test_prediction_panels_zoom_on_thin_vessels_and_name_the_runs_without_masks(tmp_path):
    from medimg.figures import save_mask_png
    from report import plots
    truth = np.zeros((128, 160), bool)
    truth[10:40, 10:40] = True  # a thick blob: no thin vessel
    truth[100, 96:150] = True  # a one-pixel vessel
    runs = {}
    for name, prediction in (("aug_none", truth), ("unet_noskip", np.zeros_like(truth))):
        folder = tmp_path / name
        save_mask_png(folder / "example_01_test_truth.png", truth)
        save_mask_png(folder / "example_01_test_prediction.png", prediction)
        runs[name] = {"status": "done", "folder": str(folder)}
    runs["lr_1e-3"] = {"status": "done", "folder": str(tmp_path / "old_run")}  # made before the masks
    top, left = plots.thin_vessel_window(truth, size=64)
    assert top <= 100 < top + 64 and left <= 96 and left + 64 > 110
    drawn, image = plots.prediction_panels(runs, ["aug_none", "unet_noskip", "lr_1e-3"], tmp_path / "panel.png")
    assert drawn == ["aug_none", "unet_noskip"] and image == "01_test"
    from conftest import assert_picture
    assert_picture(tmp_path / "panel.png", min_colours=3)


def test_prediction_panels_score_each_run_against_one_truth(tmp_path):
    """A run whose test image is another size (a run of another setting) is left out of the
    panel, never scored against a truth it did not predict."""
    from medimg.figures import save_mask_png
    from report import plots
    truth = np.zeros((64, 64), bool)
    truth[20, 5:60] = True
    runs = {}
    for name, t in (("unet", truth), ("unet_noskip", np.zeros((128, 128), bool))):
        save_mask_png(tmp_path / name / "example_01_test_truth.png", t)
        save_mask_png(tmp_path / name / "example_01_test_prediction.png", t)
        runs[name] = {"status": "done", "folder": str(tmp_path / name)}
    drawn, image = plots.prediction_panels(runs, ["unet", "unet_noskip"], tmp_path / "panel.png", size=32)
    assert drawn == ["unet"] and image == "01_test"
    drawn, image = plots.prediction_panels(runs, ["unet_noskip", "unet"], tmp_path / "panel.png", size=32)
    assert drawn == ["unet_noskip"]
    # the same size, another test image
    save_mask_png(tmp_path / "aug_none" / "example_02_test_truth.png", truth)
    save_mask_png(tmp_path / "aug_none" / "example_02_test_prediction.png", truth)
    runs["aug_none"] = {"status": "done", "folder": str(tmp_path / "aug_none")}
    assert plots.prediction_panels(runs, ["unet", "aug_none"], tmp_path / "panel.png", size=32) == (["unet"], "01_test")


def test_the_reference_unet_reads_only_seeds_made_and_trained_alike():
    """A seed copy of the reference UNet made by other code, or trained in another setting,
    is not averaged with it."""
    committed = json.loads((ROOT / "runs" / "cpu" / "unet" / "results.json").read_text())

    def run(seed, code, image_size=256):
        record = json.loads(json.dumps(committed))
        record["config"].update(seed=seed, image_size=image_size)
        return {**record, "status": "done", "code_fingerprint": {"sha256": code * 64}}
    runs = {"unet": run(42, "a"), "unet_seed43": run(43, "b"), "unet_seed44": run(44, "a", image_size=512),
            "unet_seed45": run(45, "a")}
    n = answers.problem_4_reference(runs)["numbers"]
    assert n["seeds"]["seeds"] == [42, 45]
    assert n["seeds_made_otherwise"] == ["unet_seed43", "unet_seed44"]


def test_runs_at_the_assignment_scale_are_read_over_seeds(committed_runs, tmp_path):
    """Seed copies in runs/gpu (NAME_seedS) and runs of other questions there are cited,
    counted per configuration and drawn, without any change to the code."""
    gpu = committed_runs.parent / "gpu"
    if not (gpu / "unet" / "results.json").exists():
        pytest.skip("no run at the assignment's scale")
    record = json.loads((gpu / "unet" / "results.json").read_text())

    def copy(name, dice, seed, **config):
        folder = gpu / name
        folder.mkdir()
        r = json.loads(json.dumps(record))
        r["final_metrics"]["dice"], r["config"]["seed"] = dice, seed
        r["config"].update(config)
        (folder / "results.json").write_text(json.dumps(r))

    copy("unet_seed43", 0.7111, 43)
    copy("aug_none", 0.7222, 42, augmentation="none")
    copy("aug_camera", 0.7333, 42, augmentation="camera")
    copy("aug_camera_seed43", 0.0, 43, augmentation="camera")
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])
    numbers = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())
    cited = {row["name"]: row["dice"] for row in numbers["scale"]["rows"]}
    assert {"unet_seed43": "0.711", "aug_camera": "0.733", "aug_camera_seed43": "0.000"}.items() <= cited.items()
    camera = next(c for c in numbers["scale"]["configurations"] if c["name"] == "aug_camera")
    assert (camera["n"], camera["ends_with_vessels"], camera["runs"]) == (2, 1, "0.733, 0.000")
    assert numbers["p4_1"]["gpu"]["unet"]["n"] == 2
    assert (ROOT / "report" / "figures" / "scale_4.3.png").exists()


def test_the_performance_document_is_written_from_the_logs(tmp_path):
    from report import performance
    runs = ROOT / "runs" / "cpu"
    if not list((runs / "bench").glob("bench*.json")):
        pytest.skip("no benchmark among the committed logs")
    path = performance.write(runs, tmp_path)
    text = path.read_text()
    for bench in (runs / "bench").glob("bench*.json"):
        assert f"`{bench.name}`" in text  # each benchmark named by its file
    import re
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (tmp_path / picture).stat().st_size < 200_000  # small PNGs, committed beside it


def test_without_the_raw_drive_no_human_number_is_quoted(built_from_committed_logs):
    """The human baseline comes only from runs/human_baseline.json (report/human_baseline.py);
    no external figure is typed into the sources, and without the log none is drawn."""
    import re
    committed_runs, _, numbers = built_from_committed_logs
    sources = "".join((ROOT / "report" / name).read_text() for name in ("report.typ", "problem4.typ", "plots.py",
                                                                          "answers.py", "logs.py"))
    assert not re.search(r"0\.788|0\.907", sources)
    assert not (committed_runs.parent / "human_baseline.json").exists()
    assert numbers["human"] is None


def test_which_images_gain_is_spearmans_rho_against_the_reference_with_fishers_interval(tmp_path):
    """4.3's gain per test image set beside the reference UNet's Dice on it: the rank correlation
    is SciPy's, the interval tanh(atanh(rho) -+ z * sqrt(1.06 / (n - 3))) (rho kept off +-1); a strategy that gains
    exactly where the reference fails is told apart, one that gains alike everywhere is not."""
    from scipy.stats import spearmanr
    from report import answers
    runs = _augmentation_runs(tmp_path, {"none": 0, "camera": 0.05, "affine": 0.0})
    hard = np.linspace(0.3, 0.9, 20)  # the reference's Dice, image by image
    for seed in (42, 43, 44):
        runs["unet" if seed == 42 else f"unet_seed{seed}"] = _seg_run(tmp_path, hard + 0.01 * (seed - 42), seed)
    for seed in (42, 43, 44):  # affine gains most on the images the reference finds hardest
        key = "aug_affine" if seed == 42 else f"aug_affine_seed{seed}"
        none = runs["aug_none" if seed == 42 else f"aug_none_seed{seed}"]["final_metrics"]["per_image_dice"]
        runs[key]["final_metrics"]["per_image_dice"] = {i: none[i] + 0.2 * (1 - h) for i, h in zip(IMAGES, hard)}
    out = answers.by_image(runs, ["aug_none", "aug_camera", "aug_affine"], "aug_none", family=2)
    images = sorted(IMAGES)
    mean = lambda name: np.mean([[r["final_metrics"]["per_image_dice"][i] for i in images]
                                 for r in answers.copies(runs, name)], axis=0)
    for name in ("aug_camera", "aug_affine"):
        rho = spearmanr(mean(name) - mean("aug_none"), mean("unet")).statistic
        row = out["rows"][name]
        assert row["value"] == pytest.approx(rho)
        se = np.sqrt(1.06 / 17)
        assert float(row["low"].replace("−", "-")) == pytest.approx(np.tanh(np.arctanh(np.clip(rho, -0.999999, 0.999999)) - 1.959964 * se), abs=6e-4)
    assert out["rows"]["aug_affine"]["value"] == pytest.approx(-1) and out["rows"]["aug_affine"]["told_apart_in_family"]
    assert not out["rows"]["aug_camera"]["told_apart_in_family"] and out["family_level"] == "97.5"


@pytest.mark.parametrize("dead, conv, kept", [("decoder_block3.conv", 0, 1), ("decoder_block4.conv", 0, 0),
                                              ("decoder_block4.conv", 2, 0)])
def test_a_relu_layer_dead_in_every_channel_cuts_the_levels_below_it(dead, conv, kept):
    """What 4.2 says of a layer dead in every channel, checked on the graded UNet itself: with
    decoder block 3's first ReLU silenced, the output does not depend on the deeper encoder
    blocks and sees a 9x9 window of the image (the top level: two 3x3 convolutions in encoder
    block 1, two in decoder block 4); with decoder block 4's silenced, it is one value everywhere."""
    import torch
    from medimg.diagnostics import dead_relu_fraction
    from medimg.execution import Execution
    from unet import UNet
    torch.manual_seed(0)
    model = UNet(3, 1, base_channels=4).eval()
    silenced = model.get_submodule(dead)[conv]
    with torch.no_grad():  # a convolution whose output is negative everywhere: its ReLU passes nothing
        silenced.weight.zero_()
        silenced.bias.fill_(-1.0)
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    measured = dead_relu_fraction(model, images, Execution.plain("cpu"))
    assert measured["per_layer"][f"{dead}.{conv + 1}"] == 1.0
    assert answers.levels_kept({"dead_relu_fraction": measured}) == kept

    x = images[:1].float() / 255
    with torch.no_grad():
        out = model(x)
        if kept == 0:
            assert out.max() - out.min() < 1e-6  # up to the rounding of the convolutions' sums
            return
        for block in ("encoder_block2", "encoder_block5"):  # the deep path changes: the output does not
            torch.nn.init.normal_(model.get_submodule(block)[0].weight)
        assert torch.allclose(model(x), out, rtol=0, atol=1e-6)
        moved = x.clone()
        moved[..., 24, 29] += 1  # 5 pixels right of (24, 24): outside its 9x9 window, inside (24, 28)'s
        changed = (model(moved) - out).abs()[0, 0] > 1e-6
    assert not changed[24, 24] and changed[24, 28]
    assert not changed[:, :25].any() and changed.sum() <= 81


def test_levels_kept_reads_the_deepest_cut_from_the_layer_names():
    run = lambda **shares: {"dead_relu_fraction": {"overall": 0.5, "per_layer": {
        "encoder_block1.1": 0.2, "decoder_block4.conv.3": 0.1, **{k.replace("__", "."): v for k, v in shares.items()}}}}
    assert answers.levels_kept(run()) is None and answers.levels_kept({}) is None
    assert answers.levels_kept(run(encoder_block3__1=1.0)) == 2
    assert answers.levels_kept(run(decoder_block2__conv__3=1.0)) == 2
    assert answers.levels_kept(run(decoder_block1__conv__1=1.0, encoder_block2__3=1.0)) == 1
    assert answers.levels_kept(run(encoder_block1__3=1.0)) == 0
    assert answers.levels_kept(run(encoder_block5__1=1.0)) == 4 and answers.levels_kept(run(encoder_block4__3=1.0)) == 3
    assert answers.levels_kept(run(decoder_block1__conv__3=1.0)) == 3
    assert answers.levels_kept(run(decoder_block4__conv__3=1.0, encoder_block5__3=1.0)) == 0
    assert answers.levels_kept(run(decoder_block3__conv__1=0.99)) is None


def test_a_network_worse_in_the_same_proportion_everywhere_loses_no_larger_share_of_thin_vessels():
    """4.1's test of the bottleneck reason reads shares of what the UNet with skips finds, not
    differences of recall: halving both recalls loses more thick recall than thin (0.4 against
    0.15) but the same share of each; halving only the thin one loses the larger share there."""
    rng = np.random.default_rng(1)
    images = [f"{i:02d}_test" for i in range(1, 21)]

    def run(seed, thin, thick):
        return {"status": "done", "config": {"seed": seed}, "thin_vessels": {"per_image": {
            image: {"thin_recall": t, "thick_recall": k} for image, t, k in zip(images, thin, thick)}}}

    for thin_factor, expected in ((0.5, 0.0), (0.25, -0.25)):
        runs = {}
        for seed in (42, 43, 44):
            thin, thick = rng.uniform(0.2, 0.4, 20), rng.uniform(0.7, 0.9, 20)
            suffix = "" if seed == 42 else f"_seed{seed}"
            runs[f"unet{suffix}"] = run(seed, thin, thick)
            runs[f"unet_noskip{suffix}"] = run(seed, thin_factor * thin, 0.5 * thick)
        kept = answers.share_kept_difference(runs, "unet_noskip", "unet")
        assert kept["value"] == pytest.approx(expected, abs=1e-12) and kept["images"] == 20
        assert (kept["thin"], kept["thick"]) == (f"{thin_factor:.3f}", "0.500")
        assert kept["holds_zero"] == (expected == 0.0)


def test_the_resnet18_unet_is_read_only_beside_arms_trained_alike(committed_runs, tmp_path):
    """4.4 cites the ResNet-18 UNet from scratch beside its arms only when it was trained in their
    setting by their code, every such seed of it: a run in another setting (a patch run beside
    whole images) is not read. Made up from the committed smp_scratch run (its twin in all but the encoder)."""
    twin = json.loads((committed_runs / "smp_scratch" / "results.json").read_text())

    def resnet(seed, **config):
        folder = committed_runs / registry.copy_name("smp_resnet18_scratch", seed)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(
            {**twin, "config": {**twin["config"], "encoder": "resnet18", "seed": seed, **config}}))

    def cited():  # what 4.4's answer reads, without building the PDF
        arms = logs.comparable(logs.load_runs(committed_runs, "cpu"), "4.4", (42, 43, 44), say=lambda *_: None)
        return answers.problem_4_4(arms)["numbers"].get("resnet18_scratch")
    resnet(42)
    resnet(43)
    build.main(["--runs", str(committed_runs), "--out", str(tmp_path / "report.pdf")])  # the text of two seeds compiles
    r18 = json.loads((ROOT / "report" / "generated" / "numbers.json").read_text())["p4_4"]["resnet18_scratch"]
    assert r18["seeds"] == [42, 43] and len(r18["dice"]) == 2 and cited() == r18
    resnet(42, image_size=2 * (twin["config"].get("image_size") or 256))  # another setting: not read
    assert cited()["seeds"] == [43]
    resnet(43, image_size=2 * (twin["config"].get("image_size") or 256))
    assert cited() is None
