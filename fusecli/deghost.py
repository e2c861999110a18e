"""Ghosts: where a frame disagrees with the reference after registration (something moved on its
own), its pixels are replaced by the reference's at the frame's exposure. Works on arrays
``(K, C, H, W)`` that :func:`fusecli.align.align_stack` registered; docs/alignment.md says what it
does and why.
"""

from __future__ import annotations

import cv2
import numpy as np

from fusecli.align import Summaries, summary_of
from fusecli.registration import CLIP, FLOOR, intensity_map

GHOST_RATIO = 1.3  # brightness ratio (after normalisation) beyond which a pixel is a ghost
GHOST_FLOOR = 0.02  # reference-frame units added to both sides before the ratio (noise)


def deghost(
    frames: np.ndarray,
    ratios: tuple[float, ...] | list[float],
    display_referred: bool = False,
    summaries: Summaries | None = None,
) -> list[float]:
    """Find where frames disagree with the reference after alignment and replace those pixels, in place.

    frames (K, C, H, W) [0, 1] aligned, brightest first -> for each frame, the share of its pixels
    that were ghosts (frame 0: 0). Frame k is compared with frame 0 on 4x4 area averages of the
    exposure-normalised channels where neither clipped (no clipped pixel in the block) and one of
    them is above frame k's noise floor; where any channel differs by more than ``GHOST_RATIO``
    (after ``GHOST_FLOOR`` plus frame k's noise floor is added to both), the region (opened,
    dilated, feathered) takes the reference's pixels at frame k's exposure: (1 - m) frame_k + m min(frame_0 ratio_k, 1).

    ``display_referred`` frames (decoded from camera JPEGs or PNGs) went through a camera tone curve
    that the ratio does not undo (dividing by it marked 50-81 % of some 8-bit tripod frames as
    moving): each frame is brought to the reference's brightness, and the reference to the frame's,
    through their intensity mapping instead (matched quantiles per channel over the pixels unclipped
    in both), and only where the reference is unclipped does it stand in.

    ``summaries`` are :func:`fusecli.align.align_stack`'s, for frames it did not warp (the 4x4 averages are then
    taken from each frame's half summary: no second read of the frame).
    """
    k, _, h, w = frames.shape
    small = (max(1, w // 4), max(1, h // 4))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    kernel3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def low(j: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised channels (C, h/4, w/4), and where frame j has no clipped pixel."""
        summary = summary_of(frames, j, summaries) if h % 4 == 0 and w % 4 == 0 else None
        source, top = (frames[j], frames[j].max(axis=0)) if summary is None else summary  # (the same 4x4 blocks)
        planes = np.stack([cv2.resize(p, small, interpolation=cv2.INTER_AREA) for p in source]) / np.float32(ratios[j])
        unclipped = cv2.resize((top < CLIP).astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.999
        return planes, unclipped

    ref_b, ref_ok = low(0)
    shares = [0.0]
    for j in range(1, k):
        b, ok = low(j)
        curves = None
        if display_referred:  # frame j at the reference's brightness, through their intensity mapping
            both = ref_ok & ok
            if int(both.sum()) < 64:
                shares.append(0.0)
                continue
            curves = [intensity_map(b[c][both] * ratios[j], ref_b[c][both]) for c in range(b.shape[0])]
            b = np.stack([np.interp(b[c] * ratios[j], *curves[c]) for c in range(b.shape[0])]).astype(np.float32)
        # Frame j's noise floor in reference units: a dark frame can only say "darker than this".
        floor = np.float32(GHOST_FLOOR + 2 * FLOOR / ratios[j])
        ratio = (b + floor) / (ref_b + floor)  # per channel: a moving object may differ in colour only
        differs = ((ratio > GHOST_RATIO) | (ratio < 1 / GHOST_RATIO)).any(axis=0)
        visible = (
            np.maximum(b, ref_b).mean(axis=0) * np.float32(ratios[j]) >= 4 * FLOOR
        )  # above frame j's floor in one of them
        ghost = (ref_ok & ok & visible & differs).astype(np.uint8)
        ghost = cv2.morphologyEx(ghost, cv2.MORPH_OPEN, kernel3)  # noise and thin edge residues of alignment out
        if not ghost.any():
            shares.append(0.0)
            continue
        soft = cv2.GaussianBlur(cv2.dilate(ghost, kernel).astype(np.float32), (0, 0), 1.5)
        m = np.clip(cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR) * 1.5, 0, 1)
        # only the pixels the mask touches are read and replaced (ghosts are usually a few per cent)
        where = np.nonzero(m)
        ref, mb = frames[0][:, where[0], where[1]], m[where]  # (C, n), (n,)
        if curves is None:
            stand_in = np.minimum(ref * np.float32(ratios[j] / ratios[0]), 1.0)
        else:  # the reference at frame j's brightness (the inverse mapping), where it is unclipped
            stand_in = np.stack([np.interp(ref[c], curves[c][1], curves[c][0]) for c in range(len(curves))])
            mb = mb * (ref.max(axis=0) < CLIP)
        target = frames[j][:, where[0], where[1]]
        frames[j][:, where[0], where[1]] = target + mb * (stand_in.astype(np.float32) - target)
        shares.append(float(np.count_nonzero(mb > 0.5) / (h * w)))
    return shares
