"""The scene-linear merge of a bracket: every value from the frames that hold it unclipped, divided by
its exposure, noise-optimally averaged where several do, feathered across the edges of clipped
regions. What the floating-point DNG and the EXR hold (docs/outputs.md); the network's tone-fused
picture is :mod:`fusecli.fuse`'s.

Works on frames as :func:`fusecli.stack.open_stack` gives them: linear, [0, 1] of each frame's white
level, brightest first, registered and deghosted (a ghost's pixels already hold the reference's at
the frame's exposure, so they merge to the reference's values).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

#: A value at this share of its frame's saturation level or above counts as clipped.
CLIP_SHARE = 0.97
#: Radius in pixels (packed planes: 2x2 photosites) of the feathered edge of a frame's clipped
#: regions: the frame stops contributing this far from a clipped pixel, smoothly.
FEATHER = 3
#: Weight of the darkest frame where it clipped too: it stands in where nothing holds the value.
FALLBACK = 1e-6
#: Pixels the exposure ratio between two frames is measured on: unclipped, above the noise floor.
RATIO_RANGE = (0.05, 0.8)
#: A measured ratio replaces the metadata's when within this factor of it.
RATIO_TRUST = 1.5


#: Rows merged at a time: a band's temporaries stay in the caches.
BAND_ROWS = 64
#: Every SAMPLE-th row and column measure saturation levels and exposure ratios: millions of
#: samples at camera resolutions, a sixteenth of the passes over the frames.
SAMPLE = 4


def saturation(frame: np.ndarray) -> np.ndarray:
    """Each channel's saturation level of one frame (C, H, W) [0, 1] -> (C,) float32: the channel's
    maximum where it forms a plateau (at least 1 in 10 000 pixels within 0.2 % of it, on every
    :data:`SAMPLE`-th row and column: the sensor saturated below the file's white level), else 1."""
    levels = np.ones(frame.shape[0], np.float32)
    for c, plane in enumerate(frame[:, ::SAMPLE, ::SAMPLE]):
        top = float(plane.max())
        if top > 0.25 and np.count_nonzero(plane >= top * 0.998) >= max(1, plane.size // 10_000):
            levels[c] = min(top, 1.0)
    return levels


def clipped(frame: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Where a frame (C, H, W) is clipped: any channel at :data:`CLIP_SHARE` of its saturation level
    or above -> (H, W) bool (one decision per pixel, so that every channel of a pixel comes from the
    same frames and its colour is one frame's)."""
    out = frame[0] >= CLIP_SHARE * levels[0]
    for c in range(1, frame.shape[0]):
        out |= frame[c] >= CLIP_SHARE * levels[c]
    return out


def feathered(bad: np.ndarray, radius: int = FEATHER) -> np.ndarray:
    """A frame's usable share per pixel: (H, W) bool clipped -> (H, W) float32 in [0, 1], 0 within
    ``radius`` of a clipped pixel and rising to 1 over the next ``radius`` pixels (a dilation then a
    box blur of the same size: the blur of the dilated mask is 1 wherever the dilation covers the
    whole box, which includes every clipped pixel)."""
    if not bad.any():
        return np.ones(bad.shape, np.float32)
    size = 2 * radius + 1
    grown = cv2.dilate(bad.astype(np.uint8), np.ones((size, size), np.uint8))
    return 1.0 - cv2.blur(grown.astype(np.float32), (size, size), borderType=cv2.BORDER_REPLICATE)


def measured_ratios(frames: np.ndarray, ratios: Sequence[float], bad: Sequence[np.ndarray]) -> list[float]:
    """The exposure of each frame relative to frame 0 as the pixels say it: the median of frame k over
    frame k-1 where both are unclipped and frame k-1 lies in :data:`RATIO_RANGE`, chained; where
    fewer than 1000 pixels qualify, or the measure is more than :data:`RATIO_TRUST` off the given
    step, the given step. Shutters and apertures are off their nominal stops by a few per cent, which
    a merge would show as a step at every transition. Measured on every :data:`SAMPLE`-th row and
    column. Pixels are chosen by the brighter frame alone: also asking the darker one to clear a
    floor (as :func:`fusecli.exposure.estimate_ratios` does, where only the order matters) keeps
    its noise's upward draws and biases the ratio (0.02 EV on the synthesised 6-stop brackets)."""
    out = [1.0]
    grid = (slice(None, None, SAMPLE), slice(None, None, SAMPLE))
    for k in range(1, len(frames)):
        given = ratios[k] / ratios[k - 1]
        prev, this = frames[k - 1][(slice(None), *grid)].mean(axis=0), frames[k][(slice(None), *grid)].mean(axis=0)
        use = ~bad[k - 1][grid] & ~bad[k][grid] & (prev >= RATIO_RANGE[0]) & (prev <= RATIO_RANGE[1])
        step = given
        if np.count_nonzero(use) >= 1000:
            found = float(np.median(this[use] / prev[use]))
            if given / RATIO_TRUST <= found <= given * RATIO_TRUST:
                step = found
        out.append(out[-1] * step)
    return out


def merge_linear(
    frames: np.ndarray, ratios: Sequence[float], weights: np.ndarray | None = None, measure: bool = True
) -> tuple[np.ndarray, list[float]]:
    """Merge a bracket into scene-linear values.

    frames (K, C, H, W) float32 linear [0, 1] of each frame's white, brightest first, registered;
    ratios (K,) each frame's exposure relative to frame 0 (1.0 first, decreasing); weights: an
    optional (K, 1 or C, H, W) >= 0 factor on each frame's share (the network's weights, say), or
    None -> ((C, H, W) float32 >= 0 in frame 0's units: 1 is frame 0's white level; the ratios used).

    Frame k's estimate is frames[k] / ratio[k]; it is weighted by ratio[k] (the inverse of its
    shot-noise variance: longer exposures weigh more) times its usable share (:func:`feathered`:
    none where it clipped). The darkest frame stands in, with a tiny weight, where every frame
    clipped. ``measure`` takes the ratios from the pixels (:func:`measured_ratios`).
    """
    k_frames = len(frames)
    if frames.ndim != 4 or len(ratios) != k_frames or k_frames < 1:
        raise ValueError(f"expected frames (K, C, H, W) and K ratios, got {frames.shape} and {len(ratios)}")
    bad = [clipped(f, saturation(f)) for f in frames]
    used = measured_ratios(frames, ratios, bad) if measure and k_frames > 1 else [float(r) for r in ratios]
    shares = [feathered(b) for b in bad]  # frame k's estimate frame / r, weighted by share x r: frame x share
    np.maximum(shares[-1], np.float32(FALLBACK), out=shares[-1])
    out = np.empty(frames.shape[1:], np.float32)
    height = frames.shape[2]
    for y in range(0, height, BAND_ROWS):  # in bands: the temporaries stay a band's, in the caches
        rows = slice(y, min(y + BAND_ROWS, height))
        total = np.zeros((frames.shape[1], rows.stop - y, frames.shape[3]), np.float32)
        norm = np.zeros(total.shape if weights is not None else total.shape[1:], np.float32)
        for k, r in enumerate(used):
            share = shares[k][rows] if weights is None else shares[k][rows] * weights[k][:, rows]
            total += frames[k][:, rows] * share
            norm += share * np.float32(r)
        np.maximum(norm, np.float32(1e-30), out=norm)
        np.divide(total, norm, out=out[:, rows])
    return out, used
