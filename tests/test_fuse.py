"""fusecli fuse: outputs that read back, nothing destroyed, one bad stack among good ones, real data."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rawpy
import tifffile
import torch
from conftest import ROOT, child_env, smooth_scene, write_bracket_files
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.discover import StackSource, discover
from fusecli.fuse import fuse_stack
from fusecli.io.common import FrameInfo
from fusecli.io.raw import read_camera, read_raw
from fusecli.model import load_model
from fusecli.runtime import pick_device
from fusecli.stack import load_stack

SAMPLES = ROOT / "samples"
runner = CliRunner()


def _fuse(*args):
    return runner.invoke(app, ["fuse", *map(str, args)])


def test_samples_fuse_to_outputs_that_read_back(tmp_path):
    r = _fuse(SAMPLES, "-o", tmp_path, "--format", "dng,tiff,jpg,png", "--save-weights", "--dng", "fused", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["failed"] == 0 and [x["status"] for x in summary["results"]] == ["fused"] * 3
    device = pick_device("auto")  # the device the command used
    model = load_model(None, device)[0]
    source = discover([SAMPLES])[0]
    stack = load_stack(source)
    fused, weights = fuse_stack(model, stack, device)
    assert np.allclose(weights.sum(0), 1, atol=1e-5)
    # --dng fused: the DNG holds the fused planes (16-bit, black 0, white 65535) in the source's Bayer phase
    planes, _, cam = read_raw(tmp_path / "cannon_001_fused.dng")
    assert cam.cfa == stack.camera.cfa and cam.white_level == 65535
    assert np.abs(planes - fused).max() <= 1 / 65535 + 1e-7
    assert cam.color_matrix == pytest.approx(stack.camera.color_matrix, abs=1e-4)
    with rawpy.imread(str(tmp_path / "cannon_001_fused.dng")) as raw:
        rgb = raw.postprocess(use_camera_wb=True, output_bps=8)
    assert rgb.shape == (384, 512, 3) and 20 < rgb.mean() < 235  # a sensible picture, not black or white
    tif = tifffile.imread(tmp_path / "cannon_001_fused.tif")
    assert tif.shape == (384, 512, 3) and tif.dtype == np.uint16
    jpg = cv2.imread(str(tmp_path / "cannon_001_fused.jpg"))
    png = cv2.imread(str(tmp_path / "cannon_001_fused.png"))
    assert jpg.shape == png.shape == (384, 512, 3)
    assert cv2.imread(str(tmp_path / "cannon_001_weights.png")).shape == (192, 256, 3)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_fuses_the_picture_the_cpu_does():
    """On the GPU the network runs under float16 autocast: the samples' fused images stay within a few
    levels of 65535 of the CPU's float32 ones on average."""
    on_cpu, on_gpu = load_model()[0], load_model(None, "cuda")[0]
    for source in discover([SAMPLES]):
        stack = load_stack(source)
        a = fuse_stack(on_cpu, stack, torch.device("cpu"))[0]
        b = fuse_stack(on_gpu, stack, torch.device("cuda"))[0]
        diff = np.abs(a - b)
        assert diff.mean() < 1e-3 and diff.max() < 0.03, (source.name, diff.mean(), diff.max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_for_cuda_frames_are_decoded_into_page_locked_memory():
    from fusecli.stack import StackOptions, open_stack

    source = discover([SAMPLES])[0]
    assert torch.from_numpy(open_stack(source, StackOptions(pinned=True)).frames).is_pinned()
    assert not torch.from_numpy(open_stack(source).frames).is_pinned()


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path):
    assert _fuse(SAMPLES, "-o", tmp_path).exit_code == 0
    out = tmp_path / "cannon_001_fused.dng"
    before = out.stat().st_mtime_ns
    again = _fuse(SAMPLES, "-o", tmp_path, "--json")
    assert again.exit_code == 0
    assert {x["status"] for x in json.loads(again.stdout)["results"]} == {"skipped"}
    assert out.stat().st_mtime_ns == before
    forced = _fuse(SAMPLES, "-o", tmp_path, "--overwrite", "--json")
    assert {x["status"] for x in json.loads(forced.stdout)["results"]} == {"fused"}


def test_outputs_written_beside_the_frames_are_never_taken_as_frames(tmp_path):
    stack = tmp_path / "x"
    write_bracket_files(stack, smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32], names=["a.dng", "b.dng"])
    first = _fuse(stack, "-o", stack, "--format", "dng,jpg", "--save-weights", "--json")
    assert first.exit_code == 0, first.stderr
    assert sorted(p.name for p in stack.iterdir()) == ["a.dng", "b.dng", "x_fused.dng", "x_fused.jpg", "x_weights.png"]
    again = _fuse(stack, "-o", stack, "--format", "dng,jpg", "--save-weights", "--overwrite", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["results"][0]["status"] == "fused"
    r = runner.invoke(app, ["inspect", str(stack), "--json"])
    assert [len(s["frames"]) for s in json.loads(r.stdout)["stacks"]] == [2]  # the outputs are not frames
    # a file that only looks like an output is left as it is: never a frame, never replaced
    write_bracket_files(
        tmp_path / "y", smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32], names=["y_fused.dng", "b.dng"]
    )
    before = (tmp_path / "y" / "y_fused.dng").read_bytes()
    _fuse(tmp_path / "y", "-o", tmp_path / "y", "--json")
    assert (tmp_path / "y" / "y_fused.dng").read_bytes() == before


def test_one_corrupt_stack_does_not_stop_the_others(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data)
    victim = data / "cannon_002" / "frame_2.dng"
    victim.write_bytes(victim.read_bytes()[:5000])
    r = _fuse(data, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1
    results = {x["stack"]: x for x in json.loads(r.stdout)["results"]}
    assert results["cannon_001"]["status"] == results["procedural_001"]["status"] == "fused"
    assert results["cannon_002"]["status"] == "failed" and "frame_2.dng" in results["cannon_002"]["reason"]
    assert not (tmp_path / "out" / "cannon_002_fused.dng").exists()


@pytest.mark.slow
def test_a_killed_run_leaves_no_partial_output(tmp_path):
    env = child_env()
    out = tmp_path / "out"
    for delay in (1.0, 1.6, 2.2):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fusecli",
                "fuse",
                str(SAMPLES),
                "-o",
                str(out),
                "--format",
                "dng,tiff",
                "--overwrite",
                "--quiet",
            ],
            env=env,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for dng in out.glob("*_fused.dng"):  # whatever has its final name is complete
            assert read_raw(dng)[0].shape == (4, 192, 256)
        for tif in out.glob("*_fused.tif"):
            assert tifffile.imread(tif).shape == (384, 512, 3)
    done = subprocess.run(
        [sys.executable, "-m", "fusecli", "fuse", str(SAMPLES), "-o", str(out), "--format", "dng,tiff", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.part"))  # a later run clears what a killed one left


def test_dry_run_writes_nothing(tmp_path):
    r = _fuse(SAMPLES, "-o", tmp_path / "out", "--dry-run", "--format", "dng,jpg", "--json")
    assert r.exit_code == 0
    planned = json.loads(r.stdout)["results"]
    assert planned[0]["status"] == "planned" and planned[0]["outputs"][1].endswith("cannon_001_fused.jpg")
    assert not (tmp_path / "out").exists()


def test_bad_options(tmp_path):
    r = _fuse(SAMPLES, "-o", tmp_path, "--model", tmp_path / "missing")
    assert r.exit_code == 1 and "missing.safetensors: model file not found" in r.stderr
    if not torch.cuda.is_available():
        r = _fuse(SAMPLES, "-o", tmp_path, "--device", "cuda")
        assert r.exit_code == 1 and "no CUDA device is available" in r.stderr
    r = _fuse(SAMPLES, "-o", tmp_path, "--format", "webp")
    assert r.exit_code == 2 and "expected a comma-separated list of dng, tiff, jpg, png" in r.stderr
    (tmp_path / "afile").write_text("x")
    r = _fuse(SAMPLES, "-o", tmp_path / "afile" / "out")
    assert r.exit_code == 1 and "cannot create the output folder" in r.stderr


def test_dng_is_refused_for_rgb_stacks(real, tmp_path):
    r = _fuse(real("ldr_stack_colour_hdri_frobisher_001"), "-o", tmp_path, "--format", "dng", "--json")
    assert r.exit_code == 1 and "not available for rgb stacks" in json.loads(r.stdout)["results"][0]["reason"]


def test_real_canon_sensor_data_fuses_sensibly(real, tmp_path):
    path = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    with rawpy.imread(str(path)) as raw:
        mosaic = raw.raw_image_visible[:1156, :1734].astype(np.float64)
    scene = (mosaic - 2056) / (15000 - 2056) * 3.0  # 3x brighter than captured: the 1/1 frame clips
    write_bracket_files(tmp_path / "b", scene, [1, 0.25, 0.0625], cam=read_camera(path), times=[0, 0, 0])
    r = _fuse(tmp_path / "b", "-o", tmp_path / "out", "--dng", "fused", "--json")
    assert r.exit_code == 0, r.stderr
    fused, _, _ = read_raw(tmp_path / "out" / "b_fused.dng")
    stack = load_stack(discover([tmp_path / "b"])[0])
    ref, darkest = stack.frames[0], stack.frames[-1]
    shadows = ref.max(axis=0) < 0.2
    highlights = ref.max(axis=0) >= 0.99
    assert shadows.mean() > 0.05 and highlights.sum() > 1000  # 0.4 % of the frame clips
    # shadows keep the 1/1 brightness; clipped highlights come back below white, above the darkest frame
    assert fused[:, shadows].mean() == pytest.approx(ref[:, shadows].mean(), rel=0.1)
    assert fused[:, highlights].mean() < 0.98
    assert fused[:, highlights].mean() > darkest[:, highlights].mean()


def test_real_8bit_stack_fuses_sensibly(real, tmp_path):
    folder = real("ldr_stack_colour_hdri_frobisher_001")
    r = _fuse(folder, "-o", tmp_path, "--format", "tiff,jpg", "--json")
    assert r.exit_code == 0, r.stderr
    stack = load_stack(discover([folder])[0])
    fused = tifffile.imread(tmp_path / "ldr_stack_colour_hdri_frobisher_001_fused.tif").astype(np.float32) / 65535
    assert fused.shape == (426, 640, 3)
    # frames are linear; the TIFF is encoded with the input's own profile (dcraw's gamma 495/256 here)
    encoded = lambda x: np.moveaxis(stack.space.from_linear(x), 0, -1)  # noqa: E731
    ref, normal, darkest = (encoded(f) for f in stack.frames)
    highlights = ref.max(axis=-1) >= 0.99
    shadows = ref.max(axis=-1) < 0.3
    assert fused[highlights].mean() > darkest[highlights].mean() and fused[highlights].mean() < 0.99
    # shadows (a chair, under a cabinet: 0.194 in the brightest frame, 0.030 in the normal one) are
    # lifted to show their detail, and stay darker than the brightest frame made them
    assert 2 * normal[shadows].mean() < fused[shadows].mean() < ref[shadows].mean()


def test_banded_fusion_equals_whole_image_fusion(tmp_path):
    # a budget that forces bands of 55 rows on the 192-row samples
    whole = _fuse(SAMPLES, "-o", tmp_path / "whole", "--format", "dng")
    banded = _fuse(SAMPLES, "-o", tmp_path / "banded", "--format", "dng", "--max-memory", "0.001")
    assert whole.exit_code == banded.exit_code == 0
    from fusecli.fuse import band_rows

    assert band_rows((3, 4, 192, 256), 1, 0.001) == 55
    for name in ("cannon_001", "procedural_001"):
        a = read_raw(tmp_path / "whole" / f"{name}_fused.dng")[0]
        b = read_raw(tmp_path / "banded" / f"{name}_fused.dng")[0]
        assert np.abs(a - b).max() <= 1 / 65535  # at most one step of the 16-bit DNG


def test_ctrl_c_exits_cleanly_without_partial_outputs(tmp_path):
    env = child_env()
    out = tmp_path / "out"
    # 12 stacks, so that the interrupt lands mid-run and not while the interpreter exits (a SIGINT
    # then ends the process with the default handler, after every output is complete)
    for i in range(4):
        for stack in ("cannon_001", "cannon_002", "procedural_001"):
            shutil.copytree(SAMPLES / stack, tmp_path / "in" / f"{stack}_{i}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusecli",
            "fuse",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "--format",
            "dng,tiff,jpg,png",
            "--quiet",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not SIG_IGN, as in a background job
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (out.exists() and any(out.iterdir())):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert not list(out.glob(".*.part"))
    for dng in out.glob("*_fused.dng"):
        assert read_raw(dng)[0].shape == (4, 192, 256)


def test_develop_renders_clipped_highlights_white_not_magenta():
    from conftest import camera

    from fusecli.develop import develop

    cam = camera()  # white balance R x2, B x1.5: gains that turn a clipped (1, 1, 1) magenta
    rgb = develop(np.array([[[1.0, 1.0, 1.0], [0.25, 0.5, 1 / 3]]], np.float32), cam)
    assert np.allclose(rgb[0, 0], 1.0, atol=1e-5)  # clipped in every channel: white
    assert np.ptp(rgb[0, 1]) < 1e-5 and rgb[0, 1, 0] == pytest.approx(0.5, abs=1e-4)  # grey stays grey


def test_outputs_are_ordinary_files_whatever_the_writer_does(tmp_path):
    from fusecli.io.common import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.unlink()  # some writers (safetensors) replace the file they are given
            tmp.write_bytes(b"x")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_shards_split_a_run_between_machines(tmp_path):
    """--shard I/N: disjoint shares that together hold every stack, the same on every machine."""
    done = []
    for i in (1, 2):
        r = _fuse(SAMPLES, "-o", tmp_path / f"s{i}", "--shard", f"{i}/2", "--dry-run", "--json")
        assert r.exit_code == 0, r.stderr
        done.append([x["stack"] for x in json.loads(r.stdout)["results"]])
    assert done == [["cannon_001", "procedural_001"], ["cannon_002"]]
    bad = _fuse(SAMPLES, "-o", tmp_path / "x", "--shard", "3/2")
    assert bad.exit_code == 2 and "expected 1 <= I <= N" in bad.stderr  # a usage error


def test_prefetch_keeps_the_order_and_the_errors_with_stacks_opened_at_once():
    import threading

    from fusecli.errors import FuseError
    from fusecli.stack import prefetch

    running, most = [0], [0]
    lock = threading.Lock()

    def open_one(name):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if name == "c":
            raise FuseError("c: unreadable")
        return name.upper()

    got = [(s, opened, str(e) if e else None) for s, opened, e in prefetch("abcde", open_one, ahead=3)]
    assert got == [("a", "A", None), ("b", "B", None), ("c", None, "c: unreadable"), ("d", "D", None), ("e", "E", None)]
    assert most[0] == 3  # three opened at once
    assert list(prefetch([], open_one, ahead=2)) == []


def test_jobs_fuse_the_same_outputs(tmp_path):
    one = _fuse(SAMPLES, "-o", tmp_path / "one", "--format", "dng", "--jobs", "1", "--json")
    three = _fuse(SAMPLES, "-o", tmp_path / "three", "--format", "dng", "--jobs", "3", "--json")
    assert one.exit_code == three.exit_code == 0, three.stderr
    assert [r["stack"] for r in json.loads(three.stdout)["results"]] == [
        r["stack"] for r in json.loads(one.stdout)["results"]
    ]
    written = sorted((tmp_path / "one").glob("*.dng"))
    assert len(written) == 3
    for path in written:
        assert np.array_equal(read_raw(path)[0], read_raw(tmp_path / "three" / path.name)[0])


def _sized(width: int, height: int, channels: int = 3, kind: str = "tiff", k: int = 3):
    """A stack found on disk with K frames of that size (nothing to open: default_jobs reads headers only)."""
    return StackSource(
        f"{width}x{height}", tuple(FrameInfo(Path(f"{i}.tif"), width, height, channels, kind) for i in range(k))
    )


LARGE = _sized(4000, 3000)  # 12 MP RGB, 3 frames: 432 MB of float32 frames
DNG_24MP = _sized(3000, 2000, channels=4, kind="raw")  # packed planes: 288 MB


@pytest.mark.parametrize(("cores", "jobs"), [(1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (128, 4)])
def test_fuse_opens_one_stack_per_four_cores_by_default(monkeypatch, cores, jobs):
    import fusecli.fuse

    monkeypatch.setattr(fusecli.fuse, "usable_cores", lambda: cores)
    assert fusecli.fuse.default_jobs() == jobs
    assert fusecli.fuse.default_jobs([LARGE]) == jobs
    assert fusecli.fuse.default_jobs([DNG_24MP, _sized(1224, 816)]) == jobs


@pytest.mark.parametrize(("cores", "jobs"), [(1, 1), (2, 2), (7, 2), (8, 2), (16, 4)])
def test_small_stacks_get_a_second_opener_on_two_cores(monkeypatch, cores, jobs):
    import fusecli.fuse

    monkeypatch.setattr(fusecli.fuse, "usable_cores", lambda: cores)
    # 1 MP and 7.45 MP RGB, 3 frames: 36 MB and 268 380 000 bytes, under 256 MiB (268 435 456)
    small = [_sized(1224, 816), _sized(3000, 2485)]
    assert fusecli.fuse.default_jobs(small) == jobs
    # 7.47 MP is over it: the rule for large stacks
    assert fusecli.fuse.default_jobs([*small, _sized(3000, 2490)]) == max(1, min(4, cores // 4))
