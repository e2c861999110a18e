"""A raw bracket keeps its range: the scene-linear merge, the floating-point DNG that holds it (the
default for RAW stacks) and the EXR, measured against the scenes the brackets were made from."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomllib
from conftest import ROOT, camera, write_bracket_files
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.develop import develop_scene
from fusecli.io.raw import pack_bayer
from fusecli.merge import FEATHER, merge_linear
from fusecli.synth import SynthConfig, procedural_scene, render_bracket, write_bracket

runner = CliRunner()
RADIANCE = ROOT.parent / "shared" / "data" / "radiance"
HELD_OUT = [  # the maps the bundled model never saw: its recipe's validation maps
    Path(p).relative_to("../shared/data/radiance").as_posix()
    for p in tomllib.loads((ROOT / "models" / "default.toml").read_text())["data"]["val_radiance"]
]
#: 4 frames, 6 stops: the darkest frame's white is 64x the brightest's.
RATIOS = (1.0, 0.25, 0.0625, 0.015625)


# --- the merge, by hand ----------------------------------------------------------------------------


def test_each_value_comes_from_the_frames_that_hold_it_weighted_by_exposure():
    frames = np.zeros((2, 1, 40, 40), np.float32)
    frames[0] = 0.4  # held by both frames: 0.4 and 0.4 x 0.25
    frames[1] = 0.1
    frames[0, :, :, 20:] = 1.0  # clipped in the right half of the bright frame ...
    frames[1, :, :, 20:] = 0.5  # ... where the dark frame says 0.5 / 0.25 = 2
    frames[1, :, 5, 5] = 0.15  # a noisy dark-frame pixel where both hold the value
    merged, used = merge_linear(frames, [1.0, 0.25], measure=False)
    assert used == [1.0, 0.25]
    assert merged[0, :, 20:].min() == merged[0, :, 20:].max() == pytest.approx(2.0)
    far = merged[0, :, : 20 - 2 * FEATHER]
    # weights 1 and 0.25 (inverse shot-noise variance): (1 x 0.4 + 0.25 x 0.6) / 1.25 = 0.44
    assert far[5, 5] == pytest.approx(0.44, abs=1e-6)
    far[5, 5] = 0.4
    assert np.allclose(far, 0.4)
    edge = merged[0, 20, 20 - 2 * FEATHER : 20]  # only the dark frame within FEATHER of the clipped half
    assert np.allclose(edge[FEATHER:], 0.4)


def test_the_pixels_measure_the_exposure_steps_the_metadata_rounds():
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.05, 3.0, (1, 256, 256)).astype(np.float32)
    true = [1.0, 0.26, 0.0625 * 1.08]  # shutters a few per cent off their nominal stops
    frames = np.stack([np.minimum(scene * r, 1.0) for r in true])
    merged, used = merge_linear(frames, [1.0, 0.25, 0.0625])
    assert used == pytest.approx(true, rel=1e-3)
    assert np.allclose(merged, scene, rtol=1e-3)


# --- brackets made from scenes, fused through the command line -------------------------------------


def _bracket(folder: Path, radiance: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 4-frame RAW bracket, 6 stops, of ``radiance`` with 30-50 % of the brightest frame clipped,
    written as DNGs into ``folder`` -> the scene (4, h, w) in the brightest frame's units, and where
    the darkest frame held the value (its photosite, noise included, below 99 % of its white level)."""
    cfg = SynthConfig(width=512, height=256, ratios=RATIOS, clip_share=(0.3, 0.5), cfa="RGGB")
    bracket = render_bracket(radiance, cfg, np.random.default_rng(seed))
    write_bracket(folder, bracket)
    black, white = bracket.params["black"], bracket.params["white"]
    darkest = (pack_bayer(bracket.mosaics[-1], "RGGB").astype(np.float32) - black) / (white - black)
    return bracket.scene, darkest < 0.99


def _linear_dng(path: Path) -> tuple[np.ndarray, float]:
    """The DNG's mosaic as packed planes (float) and its BaselineExposure."""
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert page.dtype == np.float16 and page.compression == 8 and page.predictor == 34894
        return pack_bayer(page.asarray().astype(np.float32), "RGGB"), page.tags[50730].value[0] / page.tags[
            50730
        ].value[1]


def _log_error(values: np.ndarray, scene: np.ndarray, low: float = 1.5, high: float = 50.0) -> float:
    """Median |log value - log scene| over the scene's values in [low, high], after one global scale."""
    hi = (scene >= low) & (scene <= high)
    assert hi.mean() > 0.02, hi.mean()
    diff = np.log(np.maximum(values[hi], 1e-9)) - np.log(scene[hi])
    return float(np.median(np.abs(diff - np.median(diff))))


def _check_fused(tmp_path: Path, name: str, scene: np.ndarray, darkest_held: np.ndarray) -> dict:
    # a tripod bracket, as synthesised: registration's sub-pixel resampling would blur the comparison
    args = ["fuse", str(tmp_path / name), "-o", str(tmp_path / "out"), "--format", "dng,exr", "--align", "none"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    planes, baseline = _linear_dng(tmp_path / "out" / f"{name}_fused.dng")
    assert baseline == pytest.approx(6.0, abs=0.01)  # opened at the reference frame's brightness
    values = planes / RATIOS[-1]  # the DNG holds the darkest frame's units
    clipped = planes >= 1.0  # the darkest frame's white
    exr = _read_exr(tmp_path / "out" / f"{name}_fused.exr")
    truth = develop_scene(scene, camera_of(tmp_path / name))
    blocks = lambda a: a.reshape(a.shape[0] // 4, 4, a.shape[1] // 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    return {
        "dng": _log_error(values, scene),
        "clipped_but_held": int(np.count_nonzero(clipped & darkest_held)),
        "exr": [_log_error(blocks(exr)[..., c], blocks(truth)[..., c]) for c in range(3)],
    }


def camera_of(folder: Path):
    from fusecli.io.raw import read_camera

    return read_camera(sorted(folder.glob("*.dng"))[0])


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path)) as f:
        chromaticities = tuple(f.header()["chromaticities"])
        rgb = f.channels()["RGB"].pixels.astype(np.float32)
    assert chromaticities[:2] == pytest.approx((0.64, 0.33), abs=1e-6)  # Rec. 709 primaries
    return rgb


def test_a_procedural_bracket_keeps_its_highlights_in_the_dng_and_the_exr(tmp_path):
    scene, held = _bracket(tmp_path / "procedural", procedural_scene(256, 512, np.random.default_rng(1)) * 8, seed=1)
    found = _check_fused(tmp_path, "procedural", scene, held)
    assert found["dng"] <= 0.05 and found["clipped_but_held"] == 0, found
    assert max(found["exr"]) <= 0.05, found


@pytest.mark.skipif(not RADIANCE.is_dir(), reason="../shared/data/radiance is absent")
@pytest.mark.parametrize("name", HELD_OUT)
def test_brackets_of_the_held_out_radiance_maps_keep_their_highlights(tmp_path, name):
    from fusecli.io.image import read_radiance

    scene, held = _bracket(tmp_path / "scene", read_radiance(RADIANCE / name), seed=HELD_OUT.index(name))
    found = _check_fused(tmp_path, "scene", scene, held)
    assert found["dng"] <= 0.05 and found["clipped_but_held"] == 0, found
    assert max(found["exr"]) <= 0.05, found


def _canon_bracket(real, folder: Path) -> tuple[np.ndarray, object]:
    """The real Canon DNG as a bracket: its sensor data x16, x4, x1 (the brightest 29 % clipped, the
    darkest as shot) -> the scene in the brightest frame's units, and the camera."""
    import rawpy

    from fusecli.io.raw import read_camera

    path = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    with rawpy.imread(str(path)) as raw:
        mosaic = raw.raw_image_visible[:1156, :1734].astype(np.float64)
    cam = read_camera(path)
    scene = (mosaic - 2056) / (15000 - 2056) * 16
    write_bracket_files(folder, scene, [1, 0.25, 0.0625], cam=cam, times=[1 / 25, 1 / 100, 1 / 400])
    return pack_bayer(scene, cam.cfa), cam


def test_the_real_canon_bracket_keeps_what_its_darkest_frame_held(real, tmp_path):
    scene, _ = _canon_bracket(real, tmp_path / "canon")
    r = runner.invoke(app, ["fuse", str(tmp_path / "canon"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.stderr
    planes, baseline = _linear_dng(tmp_path / "out" / "canon_fused.dng")
    assert baseline == pytest.approx(4.0, abs=0.01)
    held = scene / 16 < 0.99
    assert np.count_nonzero((planes >= 1.0) & held) == 0
    assert _log_error(planes * 16, scene, low=1.5, high=15.0) <= 0.05


def test_the_linear_dng_opens_in_the_dng_sdk_libraw_and_exiftool(real, tmp_path):
    import rawpy

    _canon_bracket(real, tmp_path / "canon")
    assert runner.invoke(app, ["fuse", str(tmp_path / "canon"), "-o", str(tmp_path / "out")]).exit_code == 0
    path = tmp_path / "out" / "canon_fused.dng"
    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, output_bps=8)
    assert rgb.shape == (1156, 1734, 3) and 10 < rgb.mean() < 200
    dngpy = pytest.importorskip("dngpy", reason="dngpy (the Adobe DNG SDK as a wheel) is in the test extra")
    dng = dngpy.Dng(str(path))
    assert dng.raw_pixels.shape[:2] == (1156, 1734) and 0.5 < float(dng.raw_pixels.max()) <= 1.0
    assert dng.get_baseline_exposure() == pytest.approx(4.0, abs=0.01)
    if shutil.which("exiftool"):
        out = subprocess.run(["exiftool", "-validate", "-warning", "-a", str(path)], capture_output=True, text=True)
        assert out.stdout.split() == ["Validate", ":", "OK"], out.stdout


@pytest.mark.skipif(shutil.which("rawtherapee-cli") is None, reason="rawtherapee-cli is not installed")
def test_rawtherapee_pulled_down_3_ev_shows_what_the_darkest_frame_shows(real, tmp_path):
    """The window behind the chart: the linear DNG at -3 EV against the darkest frame at +1 EV (the
    same exposure), both through RawTherapee's defaults; the tone-fused DNG at -3 EV stays flat."""
    _canon_bracket(real, tmp_path / "canon")
    for kind in ("linear", "fused"):
        r = runner.invoke(app, ["fuse", str(tmp_path / "canon"), "-o", str(tmp_path / kind), "--dng", kind])
        assert r.exit_code == 0
    (tmp_path / "m3.pp3").write_text("[Exposure]\nCompensation=-3\n")
    (tmp_path / "p1.pp3").write_text("[Exposure]\nCompensation=1\n")
    jobs = {
        "linear": (tmp_path / "linear" / "canon_fused.dng", "m3.pp3"),
        "fused": (tmp_path / "fused" / "canon_fused.dng", "m3.pp3"),
        "darkest": (tmp_path / "canon" / "IMG_0003.dng", "p1.pp3"),
    }
    window = {}
    for name, (dng, profile) in jobs.items():
        out = tmp_path / f"{name}.tif"
        subprocess.run(
            ["rawtherapee-cli", "-o", str(out), "-b16", "-t", "-Y", "-p", str(tmp_path / profile), "-c", str(dng)],
            capture_output=True,
            check=True,
            timeout=120,
        )
        window[name] = tifffile.imread(out).astype(np.float32)[40:640, 40:420] / 65535
    contrast = {k: float(np.percentile(v.mean(-1), 95) / np.percentile(v.mean(-1), 5)) for k, v in window.items()}
    assert np.abs(window["linear"] - window["darkest"]).mean() < 0.03, contrast
    assert contrast["linear"] > 0.8 * contrast["darkest"] and contrast["fused"] < 0.8 * contrast["darkest"], contrast


def test_raw_pictures_take_their_colour_from_the_merge_as_raw_developers_do(real, tmp_path):
    """The chart's neutral patches in the fused TIFF have the colour the camera data gives them
    (the darkest frame developed alone), at any brightness: the network's per-channel tone curve
    alone would make the bright ones cream."""
    from fusecli.develop import render_raw
    from fusecli.io.raw import read_raw

    _canon_bracket(real, tmp_path / "canon")
    r = runner.invoke(app, ["fuse", str(tmp_path / "canon"), "-o", str(tmp_path / "out"), "--format", "tiff"])
    assert r.exit_code == 0, r.stderr
    fused = tifffile.imread(tmp_path / "out" / "canon_fused.tif").astype(np.float64) / 65535
    planes, _, cam = read_raw(tmp_path / "canon" / "IMG_0003.dng")
    alone = render_raw(planes, cam).astype(np.float64)
    for x in (705, 815, 925, 1035):  # the grey row's brightest four patches
        a, b = (_linear(img[895:945, x - 25 : x + 25].reshape(-1, 3).mean(0)) for img in (fused, alone))
        assert _chromaticity(a) == pytest.approx(_chromaticity(b), abs=0.006), x


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _chromaticity(rgb: np.ndarray) -> tuple[float, float]:
    return float(rgb[0] / rgb.sum()), float(rgb[1] / rgb.sum())


def test_tone_fused_dng_is_kept_behind_an_option(tmp_path):
    write_bracket_files(tmp_path / "b", np.linspace(0.05, 3, 96 * 128).reshape(96, 128), [1, 0.25], cam=camera())
    r = runner.invoke(app, ["fuse", str(tmp_path / "b"), "-o", str(tmp_path / "o"), "--dng", "fused", "--json"])
    assert r.exit_code == 0
    with tifffile.TiffFile(tmp_path / "o" / "b_fused.dng") as tf:
        assert tf.pages[0].dtype == np.uint16 and 50730 not in tf.pages[0].tags  # no BaselineExposure


def test_an_rgb_bracket_in_linear_light_merges_into_the_exr(tmp_path):
    from fusecli.io import icc

    rng = np.random.default_rng(2)
    scene = rng.uniform(0.02, 3.0, (64, 96, 3)).astype(np.float32)
    (tmp_path / "b").mkdir()
    for name, r in (("a.tif", 1.0), ("b.tif", 0.25)):
        data = np.round(np.minimum(scene * r, 1.0) * 65535).astype(np.uint16)
        tifffile.imwrite(tmp_path / "b" / name, data, photometric="rgb", iccprofile=icc.linear_srgb().icc)
    (tmp_path / "b" / "exposures.txt").write_text("a.tif 1/30\nb.tif 1/120\n")
    r = runner.invoke(app, ["fuse", str(tmp_path / "b"), "-o", str(tmp_path / "o"), "--format", "exr,tiff"])
    assert r.exit_code == 0, r.stderr
    exr = _read_exr(tmp_path / "o" / "b_fused.exr")
    assert exr.shape == scene.shape
    assert np.allclose(exr, scene, rtol=2e-3, atol=2e-4)  # half floats; above 1 from the darker frame alone
