"""Synthetic brackets: DNGs that read back, reproducibility, and the label's promised properties."""

import json

import numpy as np
import pytest

from fusecli.discover import discover
from fusecli.errors import FuseError
from fusecli.io.raw import pack_bayer
from fusecli.stack import load_stack
from fusecli.synth import SynthConfig, _highlight_curve, render_label, synthesise, write_bracket

RATIOS = (1.0, 0.25, 0.0625)


def test_bracket_reads_back_through_rawpy(tmp_path, tiny_bracket):
    bracket = tiny_bracket(seed=3, cfa="GBRG")
    write_bracket(tmp_path / "s", bracket)
    [source] = discover([tmp_path / "s"])
    stack = load_stack(source)
    assert stack.camera.cfa == "GBRG" and stack.ratio_source == "exif"
    assert stack.ratios == (1.0, 0.25, 0.0625)  # exposure times are powers of two: exact
    assert stack.frames.shape == (3, 4, 24, 32)
    assert stack.read_label().shape == (4, 24, 32)
    # the planes are the mosaics that synth quantised, normalised with its black/white levels
    black, white = bracket.camera.black_level[0], bracket.camera.white_level
    expected = np.clip((pack_bayer(bracket.mosaics[1], "GBRG").astype(np.float64) - black) / (white - black), 0, 1)
    assert np.allclose(stack.frames[1], expected, atol=1e-6)


def test_same_seed_same_bracket(tiny_bracket):
    a, b, c = tiny_bracket(seed=5), tiny_bracket(seed=5), tiny_bracket(seed=6)
    assert np.array_equal(a.mosaics, b.mosaics) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.mosaics, c.mosaics)


def test_clip_share_and_ratios_of_the_frames(tiny_bracket):
    bracket = tiny_bracket(seed=1)
    share = bracket.params["clip_share"]
    white = bracket.camera.white_level
    clipped = [float((m >= white).mean()) for m in bracket.mosaics]
    assert clipped[0] == pytest.approx(share, abs=0.03)  # the 1/1 frame clips the chosen share
    assert clipped[0] > clipped[1] >= clipped[2]


def test_highlight_curve_joins_with_slope_one_and_reaches_one():
    e = np.linspace(0, 16, 100_001)
    f = _highlight_curve(e, knee=0.5, e_max=16.0).astype(np.float64)
    assert np.all(np.diff(f) >= 0)  # monotone: no brightness inversion
    assert np.array_equal(f[e <= 0.5], e[e <= 0.5].astype(np.float32))
    assert f[-1] == pytest.approx(1.0, abs=1e-6)
    i = np.searchsorted(e, 0.5)
    assert (f[i + 1] - f[i]) / (e[i + 1] - e[i]) == pytest.approx(1.0, abs=2e-3)


def test_label_keeps_dark_regions_at_the_reference_brightness_without_halos():
    clean = np.full((4, 64, 64), 0.1)
    clean[:, :, 32:] = 10.0  # a bright region 100x the dark one
    label = render_label(clean, RATIOS)
    assert np.allclose(label[:, :, :32], 0.1, rtol=1e-5)  # right up to the edge: no halo
    bright = label[:, :, 32:]
    assert np.all(bright <= 1.0) and np.all(bright >= 10.0 / 16)
    assert np.ptp(bright) < 1e-5  # flat stays flat next to the edge


def test_label_is_monotone_along_a_ramp_and_reachable():
    ramp = np.geomspace(0.01, 40.0, 256)
    clean = np.broadcast_to(ramp, (4, 16, 256)).copy()
    label = render_label(clean, RATIOS)
    assert np.all(np.diff(label[0, 8]) >= -1e-6)
    assert np.all(label <= np.minimum(clean, 1) + 1e-6) and np.all(label >= np.minimum(clean / 16, 1) - 1e-6)


def test_label_keeps_local_contrast_in_highlights():
    x = np.arange(128)
    texture = 1 + 0.2 * np.sin(x / 3.0)
    clean = np.broadcast_to(6.0 * texture, (4, 32, 128)).copy()  # a textured highlight at 6x full scale
    label = render_label(clean, RATIOS)
    row = label[0, 16, 16:-16]
    contrast = row.std() / row.mean()
    global_only = _highlight_curve(clean[0, 16, 16:-16], 0.5, 16.0)
    assert contrast > 0.8 * (texture.std() / texture.mean())  # detail kept at full strength
    assert contrast > 3 * global_only.std() / global_only.mean()  # a global curve would flatten it


def test_synthesise_writes_folders_with_parameters(tmp_path):
    cfg = SynthConfig(width=64, height=48)
    written = synthesise([], tmp_path, procedural=2, cfg=cfg, seed=1)
    assert [p.name for p in written] == ["procedural_001", "procedural_002"]
    params = json.loads((written[0] / "synth.json").read_text())
    assert params["ratios"] == list(RATIOS) and params["cfa"] in ("RGGB", "BGGR", "GRBG", "GBRG")
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    with pytest.raises(FuseError, match="procedural_001: already exists"):
        synthesise([], tmp_path, procedural=1, cfg=cfg, seed=1)


def test_synth_config_errors():
    with pytest.raises(FuseError, match="must be even"):
        SynthConfig(width=63)
    with pytest.raises(FuseError, match="strictly decreasing"):
        SynthConfig(ratios=(1.0, 0.5, 0.5))


def test_display_referred_brackets_around_a_normal_exposure():
    import cv2

    from fusecli.synth import DisplayConfig, render_display_bracket

    rng = np.random.default_rng(3)
    scene = cv2.resize(rng.uniform(0.01, 1.0, (8, 8, 3)).astype(np.float32), (128, 128)) ** 3 * 20
    for seed in range(6):
        b = render_display_bracket(scene, DisplayConfig(size=64, frames=3), np.random.default_rng(seed))
        assert b.frames.shape == (3, 3, 64, 64) and b.label.shape == (3, 64, 64)
        assert b.reference in (0, 1) and b.ratios[0] == 1.0 and np.all(np.diff(b.ratios) <= 0)
        step = 2.0 ** -b.params["ev_step"]
        true = step ** np.arange(3)
        assert np.all(np.abs(np.log2(b.ratios / true)) <= 2 / 3 + 1e-6)  # off by at most 1/3 EV each side
        means = b.frames.mean(axis=(1, 2, 3))
        assert np.all(np.diff(means) < 0)  # brightest first
        # the label is reachable: between the darkest and the brightest frame (up to 8-bit and JPEG)
        assert np.mean((b.label >= b.frames.min(axis=0) - 0.05) & (b.label <= b.frames.max(axis=0) + 0.05)) > 0.9


def test_synth_writes_display_referred_stacks_that_fuse(tmp_path):
    import cv2
    from typer.testing import CliRunner

    from fusecli.cli import app

    scene = cv2.resize(np.random.default_rng(0).uniform(0.01, 1.0, (8, 8, 3)).astype(np.float32), (96, 96)) ** 3 * 20

    cv2.imwrite(str(tmp_path / "scene.hdr"), scene[..., ::-1])
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "scene.hdr"),
            "--display",
            "--frames",
            "4",
            "--size",
            "64x64",
            "-o",
            str(tmp_path / "d"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    [folder] = [p for p in (tmp_path / "d").iterdir()]
    assert sorted(p.name for p in folder.iterdir()) == [
        "exposures.txt",
        "frame_1.png",
        "frame_2.png",
        "frame_3.png",
        "frame_4.png",
        "label.tif",
        "synth.json",
    ]
    r = runner.invoke(app, ["eval", str(tmp_path / "d"), "--method", "model,mertens", "--json"])
    assert r.exit_code == 0, r.stderr
