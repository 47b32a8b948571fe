"""tools/pilot.py's choice of the cpu profile's patch size: the smallest size at which every
seed leaves the all-background plateau on the training eyes, deciding size by size."""
import json

from tools import pilot


def made(root, crop, seed, dice_by_evaluation):
    folder = root / f"crop{crop}_seed{seed}"
    folder.mkdir(parents=True)
    epochs = [3 * (i + 1) for i in range(len(dice_by_evaluation))]
    (folder / "results.json").write_text(json.dumps({
        "evaluated_epochs": epochs, "train_whole_dice_thresholded": dice_by_evaluation, "train_losses": [0.6] * 12,
        "valid_dice_thresholded": [0.9] * len(epochs),  # the test images: never read by the pilot
        "timings": {"total_seconds": 60.0}}))


def test_a_size_fails_at_its_first_seed_on_the_plateau_and_the_next_one_is_tried(tmp_path):
    made(tmp_path, 128, 42, [0.0, 0.0, 0.0, 0.05])  # below the exit threshold at its last evaluation
    sizes = pilot.verdicts(tmp_path)
    assert sizes[128]["verdict"] == "fails" and pilot.choice(sizes) is None
    # 128's other seeds are not worth making; the next size is
    assert pilot.next_runs(sizes, set())[:3] == [(160, 42), (160, 43), (160, 44)]


def test_the_smallest_size_whose_every_seed_leaves_the_plateau_is_chosen(tmp_path):
    made(tmp_path, 128, 43, [0.0, 0.0, 0.0, 0.0])
    for seed in (42, 43):
        made(tmp_path, 160, seed, [0.0, 0.0, 0.3, 0.5])
    sizes = pilot.verdicts(tmp_path)
    assert sizes[160]["verdict"] == "undecided" and pilot.choice(sizes) is None
    # the third seed of 160, and meanwhile the next size in case it fails
    assert pilot.next_runs(sizes, {(160, 44)})[:3] == [(192, 42), (192, 43), (192, 44)]
    made(tmp_path, 160, 44, [0.0, 0.2, 0.4, 0.6])
    sizes = pilot.verdicts(tmp_path)
    assert pilot.choice(sizes) == 160 and pilot.next_runs(sizes, set()) == []
    made(tmp_path, 192, 42, [0.5, 0.6, 0.7, 0.7])  # a larger size that also works changes nothing
    assert pilot.choice(pilot.verdicts(tmp_path)) == 160


def test_when_every_size_stays_on_the_plateau_the_smallest_is_taken_and_said(tmp_path):
    for crop in pilot.CROP_SIZES:
        made(tmp_path, crop, 42, [0.0, 0.0, 0.0, 0.0])
    sizes = pilot.verdicts(tmp_path)
    assert pilot.next_runs(sizes, set()) == [] and pilot.choice(sizes) == pilot.CROP_SIZES[0]
    for part in ("train/image", "train/mask", "test/image", "test/mask"):
        (tmp_path / "retina" / part).mkdir(parents=True)
    pilot.main(["--data", str(tmp_path / "retina"), "--out", str(tmp_path)])  # nothing left to make: it decides
    record = json.loads((tmp_path / "choice.json").read_text())
    assert record["chosen_crop_size"] == 128 and record["fallback"] == pilot.FALLBACK
    assert all(size["verdict"] == "fails" for size in record["sizes"].values())
