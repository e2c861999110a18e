"""Photo folders as they really are, and one bad thing in them: each case run as a user runs it (the CLI).

Each case is one that the photo-folder issue found by trying (the old code refused, hung, aborted or
wrote garbage there).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, smooth_scene, write_bracket_files
from PIL import Image
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.discover import discover

runner = CliRunner()
SAMPLES = ROOT / "samples"
BRACKETS = ROOT.parent / "shared" / "data" / "brackets"
CLI = [sys.executable, "-m", "fusecli"]


def _run(*args, timeout=120, **kw):
    return subprocess.run([*CLI, *map(os.fsdecode, args)], capture_output=True, text=True, timeout=timeout, **kw)


def _json(result) -> dict:
    return json.loads(result.stdout)


# --- real folders --------------------------------------------------------------------------------


@pytest.mark.skipif(not BRACKETS.is_dir(), reason="../shared/data/brackets is absent (it lives beside the checkout)")
def test_every_real_bracket_is_one_stack_even_without_its_exposure_list(tmp_path):
    """The 23 real brackets: each folder is found as one stack, from its EXIF alone too (the frames
    copied without exposures.txt), including manual brackets with seconds between shots and phones
    that change ISO instead of the shutter."""
    for folder in sorted(BRACKETS.iterdir()):
        bare = tmp_path / folder.name
        bare.mkdir()
        for f in folder.iterdir():
            if f.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                shutil.copy(f, bare / f.name)
    r = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    stacks = _json(r)["stacks"]
    assert r.exit_code == 0, r.stderr
    assert sorted(s["name"] for s in stacks) == sorted(p.name for p in BRACKETS.iterdir())
    iso = {s["name"]: s for s in stacks}["cwz_building1"]  # 1/25 s then 1/50 s at falling ISO
    assert iso["ratios"] == pytest.approx([1, 0.5, 0.2, 0.08, 0.05], rel=0.02)
    assert all(any(n.startswith("one stack:") for n in s["notes"]) for s in stacks)


@pytest.mark.slow
@pytest.mark.skipif(not BRACKETS.is_dir(), reason="../shared/data/brackets is absent (it lives beside the checkout)")
def test_every_real_bracket_fuses(tmp_path):
    small = tmp_path / "small"  # a quarter of the size: the same folders, faster
    for folder in sorted(BRACKETS.iterdir()):
        (small / folder.name).mkdir(parents=True)
        for f in folder.iterdir():
            if f.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                im = Image.open(f)
                exif = im.getexif()
                im.reduce(4).save(small / folder.name / f.name, exif=exif) if exif else im.reduce(4).save(
                    small / folder.name / f.name
                )
            elif f.suffix == ".txt":
                shutil.copy(f, small / folder.name / f.name)
    r = runner.invoke(app, ["fuse", str(small), "-o", str(tmp_path / "out"), "--format", "jpg", "--json"])
    results = _json(r)["results"]
    assert r.exit_code == 0, r.stderr
    assert len(results) == 23 and all(x["status"] == "fused" for x in results)


def test_a_hundred_under_over_pairs_without_metadata_all_fuse(tmp_path):
    """100 pairs 2-6 EV apart, no exposure metadata; every third a JPEG whose EXIF times are 10 s
    apart (a phone's manual pair). Each pair is one folder, as public MEF collections hold them."""
    rng = np.random.default_rng(5)
    for n in range(100):
        scene = cv2.resize(rng.uniform(0.0, 1.0, (6, 8)).astype(np.float32), (64, 48)) ** 3 * 40 + 0.02
        ev = 2 + 4 * n / 99
        folder = tmp_path / "pairs" / f"pair{n:03d}"
        folder.mkdir(parents=True)
        for k, gain in enumerate((1.0, 2.0**-ev)):
            encoded = np.clip(scene * gain * 0.4, 0, 1) ** (1 / 2.2)
            image = Image.fromarray(np.repeat((encoded * 255).round().astype(np.uint8)[..., None], 3, axis=-1))
            if n % 3 == 0:
                exif = Image.Exif()
                exif[0x0132] = (datetime(2026, 5, 1, 10, 57, 23) + timedelta(seconds=10 * k)).strftime(
                    "%Y:%m:%d %H:%M:%S"
                )
                image.save(folder / f"{'under' if k else 'over'}.jpg", exif=exif, quality=95)
            else:
                image.save(folder / f"{'under' if k else 'over'}.png")
    r = runner.invoke(app, ["fuse", str(tmp_path / "pairs"), "-o", str(tmp_path / "out"), "--format", "png", "--json"])
    results = _json(r)["results"]
    assert r.exit_code == 0, r.stderr
    assert len(results) == 100 and all(x["status"] == "fused" for x in results)


def test_ratios_override_exif_that_cannot_order_the_frames(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 8])  # identical EXIF
    (tmp_path / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/8\n")
    refused = runner.invoke(app, ["inspect", str(tmp_path)])
    assert refused.exit_code == 1 and "same exposure" in refused.stderr
    r = runner.invoke(app, ["inspect", str(tmp_path), "--ratios", "1,0.25", "--json"])
    assert r.exit_code == 0, r.stderr
    [stack] = _json(r)["stacks"]
    assert stack["ratio_source"] == "user" and [Path(f["path"]).name for f in stack["frames"]] == [
        "IMG_0001.dng",
        "IMG_0002.dng",
    ]


# --- one bad thing must not stop the rest, hang, or write garbage --------------------------------


def test_one_unreadable_file_fails_only_its_stack(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES, data)
    (data / "cannon_002" / "frame_2.dng").write_bytes(b"this is not a raw file")
    r = runner.invoke(app, ["fuse", str(data), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 1
    results = {x["stack"]: x for x in _json(r)["results"]}
    assert results["cannon_001"]["status"] == results["procedural_001"]["status"] == "fused"
    assert results["cannon_002"]["status"] == "failed" and "frame_2.dng" in results["cannon_002"]["reason"]
    assert "fusecli fuse: error: cannon_002: " in r.stderr and "frame_2.dng" in r.stderr


def test_a_symlink_loop_is_visited_once(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES / "cannon_001", data / "cannon_001")
    (data / "cannon_001" / "up").symlink_to("..")
    inspect = _run("inspect", data, "--json", timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    assert [s["name"] for s in json.loads(inspect.stdout)["stacks"]] == ["cannon_001"]
    fuse = _run("fuse", data, "-o", tmp_path / "out", "--json", timeout=120)
    assert fuse.returncode == 0 and len(json.loads(fuse.stdout)["results"]) == 1


def test_a_model_with_nan_weights_is_refused_and_writes_nothing(tmp_path):
    from safetensors.torch import load_file, save_file

    for ext in (".safetensors", ".json"):
        shutil.copy(ROOT / "models" / f"default{ext}", tmp_path / f"broken{ext}")
    state = load_file(str(tmp_path / "broken.safetensors"))
    name = next(iter(state))
    state[name][...] = float("nan")
    save_file(state, str(tmp_path / "broken.safetensors"))
    r = runner.invoke(app, ["fuse", str(SAMPLES), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "broken")])
    assert r.exit_code == 1 and "non-finite (NaN or Inf) weights" in r.stderr and name in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_run_keeps_another_live_runs_temporaries_and_removes_dead_ones(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    from fusecli.io.common import _HOST, _pid_namespace

    owner = f"fc-{_HOST}-{_pid_namespace()}"
    try:
        mine = out / f".cannon_001_fused.dng.{owner}-{live.pid}.abcd1234.part"  # another run, writing now
        stale = out / f".cannon_002_fused.dng.{owner}-{dead.pid}.abcd1234.part"  # a killed run's leftover
        mine.write_bytes(b"in progress")
        stale.write_bytes(b"left behind")
        r = runner.invoke(app, ["fuse", str(SAMPLES / "procedural_001"), "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        assert mine.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()


def test_a_stack_with_some_outputs_gets_the_missing_ones(tmp_path):
    out = tmp_path / "out"
    first = runner.invoke(app, ["fuse", str(SAMPLES / "cannon_001"), "-o", str(out), "--format", "dng,tiff"])
    assert first.exit_code == 0
    dng = (out / "cannon_001_fused.dng").read_bytes()
    (out / "cannon_001_fused.tif").unlink()  # killed between its DNG and its TIFF
    r = runner.invoke(app, ["fuse", str(SAMPLES / "cannon_001"), "-o", str(out), "--format", "dng,tiff", "--json"])
    assert r.exit_code == 0
    [res] = _json(r)["results"]
    assert res["status"] == "fused" and [Path(p).name for p in res["outputs"]] == ["cannon_001_fused.tif"]
    assert (out / "cannon_001_fused.tif").is_file() and (out / "cannon_001_fused.dng").read_bytes() == dng
    assert "kept the existing cannon_001_fused.dng" in r.stderr


def _tiff_header_only(path: Path, width: int, height: int) -> None:
    """A little-endian TIFF whose header claims width x height x 3 x 16-bit and holds no data."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 16),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 4096),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, width * height * 6),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd)


def test_a_tiff_header_claiming_8_gib_is_one_line_not_an_allocation(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        _tiff_header_only(folder / name, 60000, 4000)
    r = _run("fuse", folder, "-o", tmp_path / "out", timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "a.tif: truncated TIFF: its header claims 60000x4000x3" in r.stderr


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    for k, f in enumerate(sorted((SAMPLES / "cannon_001").glob("frame_*.dng"))):
        shutil.copy(f, os.fsencode(folder) + b"/fr\xe4me_" + str(k).encode() + b".dng")
    r = _run("fuse", folder, "-o", tmp_path / "out", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["status"] == "fused" and "Traceback" not in r.stderr


def test_train_resume_on_a_foreign_checkpoint_fails_before_writing(tmp_path):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}}, run / "last.pt")
    r = runner.invoke(app, ["train", "--resume", str(run)])
    assert r.exit_code == 1 and "not a fusecli training checkpoint (no config" in r.stderr
    assert not (run / "config.json").exists()
    from fusecli.train import TrainConfig

    cfg = TrainConfig()
    bad = {
        "config": cfg.to_dict(),
        "model": {"inp.weight": torch.zeros(1)},
        "optimizer": {},
        "step": 1,
        "best_val": 1.0,
    }
    torch.save(bad, run / "last.pt")
    (run / "config.json").write_text("{}")
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "2"])
    assert r.exit_code == 1 and "do not fit the architecture" in r.stderr
    assert (run / "config.json").read_text() == "{}"


def test_a_write_error_names_its_cause(tmp_path, monkeypatch):
    import fusecli.outputs

    def full(*args, **kwargs):
        raise OSError("No space left on device (simulated)")

    monkeypatch.setattr(fusecli.outputs, "write_dng", full)
    r = runner.invoke(app, ["fuse", str(SAMPLES / "cannon_001"), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 1
    reason = _json(r)["results"][0]["reason"]
    assert "No space left on device (simulated)" in reason and "None" not in reason
    assert "fusecli fuse: error: cannon_001:" in r.stderr  # on stderr too, beside --json on stdout


@pytest.mark.parametrize("layout", ["RGBA", "YC", "Y"])
def test_exr_radiance_maps_of_every_common_layout(tmp_path, layout):
    import OpenEXR

    from fusecli.io.image import read_radiance

    rng = np.random.default_rng(1)
    rgb = rng.uniform(0.1, 4.0, (16, 24, 3)).astype(np.float32)
    luma = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    if layout == "RGBA":
        channels = {"RGBA": np.concatenate([rgb, np.ones((16, 24, 1), np.float32)], axis=-1)}
        expected = rgb
    elif layout == "YC":
        channels = {"Y": luma, "RY": rgb[..., 0] / luma - 1, "BY": rgb[..., 2] / luma - 1}
        expected = rgb
    else:
        channels = {"Y": luma}
        expected = np.repeat(luma[..., None], 3, axis=-1)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(tmp_path / "map.exr"))
    assert np.allclose(read_radiance(tmp_path / "map.exr"), expected, rtol=1e-4, atol=1e-5)
    r = runner.invoke(app, ["synth", str(tmp_path / "map.exr"), "-o", str(tmp_path / "out"), "--size", "16x16"])
    assert r.exit_code == 0, r.stderr


def test_inspect_decode_finds_a_truncated_raw_that_headers_miss(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLES / "cannon_001", data)
    victim = data / "frame_2.dng"
    victim.write_bytes(victim.read_bytes()[:-20000])
    quick = runner.invoke(app, ["inspect", str(data)])
    assert quick.exit_code == 0 and "read from headers only; --decode decodes every frame" in quick.stdout
    r = runner.invoke(app, ["inspect", str(data), "--decode"])
    assert r.exit_code == 1 and "frame_2.dng" in r.stderr


def test_discovery_of_a_broken_file_alone(tmp_path):
    (tmp_path / "bad.dng").write_bytes(b"nope")
    [source] = discover([tmp_path])
    assert source.error and "bad.dng" in source.error
