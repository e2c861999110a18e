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
