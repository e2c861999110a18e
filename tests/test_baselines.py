"""Baselines as their users run them: MergeMertens on 8-bit frames, enfuse on 16-bit TIFFs; the best single exposure."""

import shutil

import numpy as np
import pytest

from fusecli.baselines import best_single, enfuse_display, mertens_display


@pytest.mark.parametrize("c", [3, 1])
def test_mertens_of_identical_frames_is_the_frame(c):
    # Any weighting of K copies of one image is that image: this catches a wrong input scale
    # (OpenCV divides every input by 255, float or not).
    x = np.random.default_rng(0).uniform(0.05, 0.9, (48, 64, c)).astype(np.float32)
    out = mertens_display(np.stack([x, x, x]))
    assert out.shape == (48, 64, c)
    assert np.abs(out - x).max() < 0.01  # 8-bit quantisation


def test_mertens_recovers_clipped_highlights_from_darker_frames():
    scene = np.linspace(0.05, 3.0, 64 * 64, dtype=np.float32).reshape(64, 64, 1).repeat(3, -1)
    frames = np.stack([np.clip(scene * r, 0, 1) for r in (1, 0.25, 0.0625)])
    out = mertens_display(frames)
    bright = scene[..., 0] > 1.5  # clipped flat in the brightest frame
    assert np.ptp(out[..., 0][bright]) > 0.05 and out.max() <= 1.0


@pytest.mark.skipif(shutil.which("enfuse") is None, reason="enfuse is not installed (Debian: apt-get install enfuse)")
def test_enfuse_of_identical_frames_is_the_frame():
    x = np.random.default_rng(1).uniform(0.05, 0.9, (32, 40, 3)).astype(np.float32)
    out = enfuse_display(np.stack([x, x]))
    assert out.shape == (32, 40, 3) and np.abs(out - x).max() < 0.01


def test_best_single_picks_the_frame_nearest_the_label():
    frames = np.stack([np.full((1, 4, 4), v, np.float32) for v in (0.9, 0.4, 0.1)])
    k, frame = best_single(frames, np.full((1, 4, 4), 0.35, np.float32))
    assert k == 1 and np.array_equal(frame, frames[1])
