"""Handheld brackets: each frame registered onto the one before it, back to the reference
(:mod:`fusecli.registration`), and warped; one half-resolution read of each frame that registration
and deghosting share. What moved on its own is :mod:`fusecli.deghost`'s. Works on arrays
``(K, C, H, W)``, never on a Stack. docs/alignment.md says what it does and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import cv2
import numpy as np

from fusecli.choices import AlignMode, values
from fusecli.errors import FuseError
from fusecli.registration import (
    CLIP,
    STILL,
    Pair,
    describe_warp,
    estimate_warp,
    intensity_map,
    max_displacement,
    prepare,
    scale_warp,
    tripod_test,
)

MAX_SIDE = 1024  # finest pyramid level registered (long side, packed pixels)
TINY = 0.05  # pixels: a smaller warp is not applied
SHOULDER = 0.9  # display-referred values above this sit on the camera curve's shoulder
STILL_REASON = f"moved under {STILL:g} px"  # a frame's reason when the tripod test settled it


@dataclass
class FrameMotion:
    """The motion found for one frame, in packed-plane pixels, frame = warp(reference)."""

    frame: int
    status: str  # "reference", "aligned", "static" (under 0.05 px: not warped) or "unaligned"
    dx: float = 0.0  # translation of the image centre
    dy: float = 0.0
    rotation_deg: float = 0.0
    correlation: float | None = None
    reason: str | None = None
    ghost_share: float | None = None  # share of the frame's pixels replaced as ghosts (None: deghosting off)
    matrix: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # 3x3 row-major, reference -> frame

    def to_dict(self) -> dict:
        d = asdict(self)
        d["matrix"] = list(self.matrix)
        return d


def check_mode(mode: str) -> None:
    """A FuseError unless ``mode`` is one of :class:`fusecli.choices.AlignMode`."""
    if mode not in values(AlignMode):
        raise FuseError(f"--align {mode!r}: expected one of {', '.join(values(AlignMode))}")


def _brightness(frame: np.ndarray) -> np.ndarray:
    """(C, H, W) [0, 1] -> (H, W) float32 channel mean."""
    return frame.mean(axis=0, dtype=np.float32)


def registration_size(h: int, w: int) -> tuple[int, int]:
    """(width, height) at which a stack of (h, w) is registered: the long side at most MAX_SIDE."""
    scale = min(1.0, MAX_SIDE / max(h, w))
    return max(8, round(w * scale)), max(8, round(h * scale))


def _shrink(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) [0, 1] -> (brightness, share of clipped pixels), both area-averaged to ``size``."""
    return _area_to(size, _brightness(frame), (frame.max(axis=0) >= CLIP).astype(np.float32))


def _area_to(size: tuple[int, int], *maps: np.ndarray) -> tuple[np.ndarray, ...]:
    """(H, W) float32 maps, each area-averaged to ``size`` (width, height); as they are if already so."""
    if size == (maps[0].shape[-1], maps[0].shape[-2]):
        return maps
    return tuple(cv2.resize(m, size, interpolation=cv2.INTER_AREA) for m in maps)


class HalfSummary(NamedTuple):
    """A frame at half size: the 2x2 block means of each channel (C, H/2, W/2) and the 2x2 block
    maxima of its brightest channel (H/2, W/2), float32."""

    means: np.ndarray
    peak: np.ndarray


def half_summary(frame: np.ndarray, rows: int = 16) -> HalfSummary:
    """One read of a frame for registration and deghosting: (C, H, W) [0, 1], H and W even -> its
    :class:`HalfSummary`. In bands of ``rows`` rows, so that the maximum reads what the means just
    brought into the cache (registration and deghosting would otherwise each read the frame)."""
    c, h, w = frame.shape
    if h % 2 or w % 2:
        raise ValueError(f"half_summary needs an even-sized frame, got {h}x{w}")
    means = np.empty((c, h // 2, w // 2), np.float32)
    peak = np.empty((h // 2, w // 2), np.float32)
    for y in range(0, h, rows):
        band = frame[:, y : y + rows]
        half = slice(y // 2, y // 2 + band.shape[1] // 2)
        for ch in range(c):
            cv2.resize(band[ch], (w // 2, band.shape[1] // 2), dst=means[ch, half], interpolation=cv2.INTER_AREA)
        top = band[0] if c == 1 else cv2.max(band[0], band[1])
        for ch in range(2, c):
            top = cv2.max(top, band[ch])
        np.maximum(
            np.maximum(top[0::2, 0::2], top[0::2, 1::2]), np.maximum(top[1::2, 0::2], top[1::2, 1::2]), out=peak[half]
        )
    return HalfSummary(means, peak)


#: Frames' :func:`half_summary`, by index, shared by :func:`align_stack` and
#: :func:`fusecli.deghost.deghost` (a warped frame's entry is dropped); None where a frame's size is odd.
Summaries = dict[int, HalfSummary | None]


def summary_of(frames: np.ndarray, k: int, cache: Summaries | None) -> HalfSummary | None:
    """Frame k's half summary (computed once into ``cache``), or None when its height or width is odd."""
    if cache is not None and k in cache:
        return cache[k]
    h, w = frames.shape[-2:]
    summary = half_summary(frames[k]) if h % 2 == 0 and w % 2 == 0 else None
    if cache is not None:
        cache[k] = summary
    return summary


def _shrink_stack(frames: np.ndarray, k: int, size: tuple[int, int], cache: Summaries | None):
    """:func:`_shrink` of frame k; from its half summary (one read of the frame) where the registration
    size is at most half the frame's (frames of 2048 px and more)."""
    h, w = frames.shape[-2:]
    if size[0] > w // 2 or size[1] > h // 2 or (summary := summary_of(frames, k, cache)) is None:
        return _shrink(frames[k], size)
    means, peak = summary
    return _area_to(size, means.mean(axis=0, dtype=np.float32), (peak >= CLIP).astype(np.float32))


def warp_frame(frame: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample every plane of ``frame`` (C, H, W) at ``warp`` (reference pixel -> frame pixel),
    bicubic, clipped to [0, 1] -> (the warped frame, (H, W) bool: the pixels the frame does not
    cover, a border as wide as the motion, which hold the frame's nearest edge pixel)."""
    h, w = frame.shape[-2:]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    out = np.empty_like(frame)
    for c in range(frame.shape[0]):
        out[c] = cv2.warpPerspective(frame[c], warp, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    covered = cv2.warpPerspective(
        np.ones((h, w), np.float32), warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0.0
    )
    return np.clip(out, 0.0, 1.0, out=out), covered < 0.999


def fill_uncovered(
    frame: np.ndarray, outside: np.ndarray, reference: np.ndarray, gain: float, display_referred: bool
) -> None:
    """Give a warped frame's uncovered pixels (``outside``, (H, W) bool) the ``reference`` frame's,
    brought to the frame's exposure, **in place**, where the reference holds them unclipped: times
    ``gain`` (the frame's exposure over the reference's) for linear frames; through the two frames'
    intensity mapping (matched quantiles where both are unclipped) for display-referred ones, whose
    camera tone curve the ratio does not undo, and only below the curve's shoulder (0.9), where the
    mapping is well conditioned. Elsewhere the frame's edge pixel stays: a clipped reference says
    nothing of a darker frame. frame, reference (C, H, W) [0, 1]."""
    top = SHOULDER if display_referred else CLIP
    usable = outside & (reference.max(axis=0) < top)
    if not usable.any():
        return
    if not display_referred:
        frame[:, usable] = np.minimum(reference[:, usable] * np.float32(gain), 1.0)
        return
    both = ~outside & (reference.max(axis=0) < top) & (frame.max(axis=0) < CLIP)
    both[::, 1::2] = False  # every other column and row is plenty for 64 quantiles
    both[1::2] = False
    if np.count_nonzero(both) < 1000:
        return
    for c in range(frame.shape[0]):
        knots = intensity_map(reference[c][both], frame[c][both])
        frame[c][usable] = np.interp(reference[c][usable], *knots).astype(np.float32)


class Aligned(NamedTuple):
    """A registered stack: its frames (the array given, aligned in place) and each frame's motion."""

    frames: np.ndarray
    motion: list[FrameMotion]


def align_stack(
    frames: np.ndarray,
    ratios: tuple[float, ...] | list[float],
    mode: AlignMode,
    summaries: Summaries | None = None,
    display_referred: bool = False,
) -> Aligned:
    """Register frames (K, C, H, W) [0, 1], brightest first, onto frame 0, **in place** -> the same
    array, aligned, and the motion of each frame. ``mode`` "none" leaves the frames as they are; a
    warped frame's uncovered border is filled by :func:`fill_uncovered` (``display_referred``: the
    frames went through a camera tone curve).
    ``summaries`` (a dict to share with :func:`fusecli.deghost.deghost`) keeps each frame's half summary; a warped
    frame's is dropped."""
    check_mode(mode)
    motions = [FrameMotion(0, "reference")]
    if mode == "none":
        return Aligned(
            frames, motions + [FrameMotion(k, "unaligned", reason="--align none") for k in range(1, len(frames))]
        )
    h, w = frames.shape[-2:]
    size = registration_size(h, w)
    aligned = frames  # frame k is replaced once registered; frame 0 never is
    previous = 0  # the last frame aligned (or the reference)
    shrunk = {0: _shrink_stack(frames, 0, size, summaries)}
    for k in range(1, len(frames)):
        shrunk[k] = _shrink_stack(frames, k, size, summaries)
        try:
            pair = Pair.of(*prepare(shrunk[previous], ratios[previous], shrunk[k], ratios[k]))
            still, run = tripod_test(pair) if mode == "translation" else (None, None)
            if still is not None:
                motions.append(FrameMotion(k, "static", correlation=still, reason=STILL_REASON))
                previous = k
                continue
            warp, cc = estimate_warp(pair, mode, run)
            warp = scale_warp(warp, w / size[0], h / size[1])
        except ValueError as e:
            motions.append(FrameMotion(k, "unaligned", reason=str(e)))
            previous = k  # the next frame is registered against this one as it is (a tripod stack stays consistent)
            continue
        dx, dy, rot = describe_warp(warp, h, w)
        matrix = tuple(float(v) for v in (warp / warp[2, 2]).ravel())
        if max_displacement(warp, h, w) < TINY:
            motions.append(FrameMotion(k, "static", dx, dy, rot, cc, matrix=matrix))
        else:
            aligned[k], outside = warp_frame(aligned[k], warp)
            # from the next brighter frame, already aligned: the nearest exposure, the best-conditioned mapping
            fill_uncovered(aligned[k], outside, aligned[k - 1], ratios[k] / ratios[k - 1], display_referred)
            if summaries is not None:
                summaries.pop(k, None)
            shrunk[k] = _shrink_stack(aligned, k, size, summaries)
            motions.append(FrameMotion(k, "aligned", dx, dy, rot, cc, matrix=matrix))
        previous = k
    return Aligned(aligned, motions)
