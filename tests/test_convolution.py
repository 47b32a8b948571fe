"""convolution.py: every timed method computes the same thing, and the study's files appear."""
import json
import sys

import numpy as np
import pytest

import convolution as study
from medimg import convolution


@pytest.mark.parametrize("kernel_size", [3, 4, 7])
def test_every_timed_method_agrees_with_the_others(kernel_size):
    rng = np.random.default_rng(0)
    image, kernel = rng.random((40, 33)) * 255, rng.normal(size=(kernel_size, kernel_size))
    outputs = {name: fn(image, kernel) for name, fn in convolution.METHODS.items()}
    if kernel_size % 2 == 0:  # scipy's 'same' centres even kernels differently: compare the others only
        outputs = {k: v for k, v in outputs.items() if not k.startswith("scipy")}
    reference = outputs.pop("ours (vectorised)")
    for name, out in outputs.items():
        np.testing.assert_allclose(out, reference, atol=1e-9, err_msg=name)


def test_kernels_blur_and_find_edges():
    gauss = convolution.gaussian_kernel(2.0)
    assert gauss.shape == (13, 13) and gauss.sum() == pytest.approx(1.0)
    assert convolution.box_kernel(5).sum() == pytest.approx(1.0)
    # a step from dark (top) to bright (bottom): only the horizontal-edge kernel answers
    step = np.zeros((20, 20))
    step[10:] = 100.0
    from utils import discrete_2d_convolution
    horizontal = discrete_2d_convolution(step, convolution.SOBEL_HORIZONTAL_EDGES)[2:-2, 2:-2]
    vertical = discrete_2d_convolution(step, convolution.SOBEL_VERTICAL_EDGES)[2:-2, 2:-2]
    assert np.abs(horizontal).max() == 400.0 and np.abs(vertical).max() == 0.0


def test_quick_study_writes_its_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["convolution.py", "--out", str(tmp_path / "out"), "--quick"])
    study.main()
    out = tmp_path / "out"
    for name in ("convolution_timings.json", "convolution_speed.png", "blur.png", "edges.png"):
        assert (out / name).stat().st_size > 0, name
    timings = json.loads((out / "convolution_timings.json").read_text())
    assert timings["all_methods_agree"] is True
    assert {r["method"] for r in timings["records"]} == set(convolution.METHODS)
    assert all(r["seconds"] > 0 for r in timings["records"] if "seconds" in r)
    assert timings["machine"]["cpu"] and timings["versions"]["scipy"]
    assert timings["blur"]["high_frequency_energy_ratio"] < 0.5  # the blur removed fine detail


def test_unreadable_image_is_one_clear_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "photo.jpg").write_text("not an image")
    monkeypatch.setattr(sys, "argv", ["convolution.py", "--out", str(tmp_path / "out"),
                                      "--image", str(tmp_path / "photo.jpg"), "--quick"])
    with pytest.raises(SystemExit) as exit_info:
        study.run_cli(study.main)
    assert exit_info.value.code == 2
    assert "photo.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
