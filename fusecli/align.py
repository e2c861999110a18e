"""Handheld brackets: registering frames onto the reference (OpenCV ECC, coarse to fine); what moved
on its own is :mod:`fusecli.deghost`'s. Works on arrays ``(K, C, H, W)``, never on a Stack. README.md ("Handheld
brackets") says what it does; docs/design.md says why it is built this way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import cv2
import numpy as np

from fusecli.errors import FuseError

Mode = Literal["none", "translation", "homography"]
MODES = ("none", "translation", "homography")
MAX_SIDE = 1024  # finest pyramid level registered (long side, packed pixels)
COARSE_SIDE = 128
MIN_CORRELATION = 0.6
MIN_VALID = 0.01  # share of pixels valid in both images
CLIP = 0.98
FLOOR = 0.004
TINY = 0.05  # pixels: a smaller warp is not applied
WANDER = 3.0  # registration pixels: a translation ECC found this far from every start is not trusted
STILL = 0.1  # registration pixels: a frame found to move less at half size is not registered further
STILL_REASON = f"moved under {STILL:g} px"  # a frame's reason when the tripod test settled it
SAME_START = 0.5  # registration pixels: a phase-correlation start this close to no motion is no motion
# registration pixels: ECC runs this close at half size go on to full size as one. (0.1 merged a turned
# synthetic frame's two runs, 0.05 px apart there, that end apart at full size: bench/bench_align.py's
# shift+turn homography max went 0.14 -> 0.70 px.)
SAME_WARP = 0.01
ECC_EPS = 1e-3  # ECC's convergence threshold at the finest level (registration pixels for a translation)
ECC_COARSE_EPS = 1e-3  # the same at the coarser levels (they only give the next a start)


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
    """A FuseError unless ``mode`` is one of :data:`MODES`."""
    if mode not in MODES:
        raise FuseError(f"--align {mode!r}: expected one of {', '.join(MODES)}")


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


def half_summary(frame: np.ndarray, rows: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """One read of a frame for registration and deghosting: (C, H, W) [0, 1], H and W even -> the
    2x2 block means of each channel (C, H/2, W/2) and the 2x2 block maxima of the brightest channel
    (H/2, W/2), float32. In bands of ``rows`` rows, so that the maximum reads what the means just
    brought into the cache: 28-30 ms per 12 MP RGB frame (bands of 64 rows: 34 ms), where
    registration's brightness and clip map (77 ms) and deghosting's 4x4 means (33 ms) each read the
    frame (``python bench/one_read.py --repeat 15``)."""
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
    return means, peak


#: Frames' :func:`half_summary`, by index, shared by :func:`align_stack` and
#: :func:`fusecli.deghost.deghost` (a warped frame's entry is dropped); None where a frame's size is odd.
Summaries = dict[int, tuple[np.ndarray, np.ndarray] | None]


def summary_of(frames: np.ndarray, k: int, cache: Summaries | None) -> tuple[np.ndarray, np.ndarray] | None:
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


def _registration_pair(
    template: tuple[np.ndarray, np.ndarray], t_ratio: float, image: tuple[np.ndarray, np.ndarray], i_ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exposure-normalised, log-compressed brightness of two frames (as :func:`_shrink` gives them),
    clamped to the range both expose well -> (template, image, template's valid mask, image's valid
    mask), float32 / uint8. A pixel is valid when none of the pixels it averages clipped and its
    value lies in the shared range."""
    (t, t_clip), (i, i_clip) = template, image
    t, i = t / np.float32(t_ratio), i / np.float32(i_ratio)
    lo = FLOOR / min(t_ratio, i_ratio)  # the noise floor of the darker frame, in reference units
    hi = CLIP / max(t_ratio, i_ratio)  # where the brighter frame clips, in reference units
    if lo >= hi:
        raise ValueError("the two exposures share no well-exposed range")
    t_valid = (t_clip == 0) & (t >= lo) & (t <= hi)
    i_valid = (i_clip == 0) & (i >= lo) & (i <= hi)
    log_lo, log_hi = math.log(lo), math.log(hi)
    to_unit = lambda x: (np.log(np.clip(x, lo, hi)) - np.float32(log_lo)) / np.float32(log_hi - log_lo)  # noqa: E731
    return (
        to_unit(t).astype(np.float32),
        to_unit(i).astype(np.float32),
        t_valid.astype(np.uint8),
        i_valid.astype(np.uint8),
    )


def _levels(h: int, w: int) -> int:
    """Pyramid levels from (h, w) down to a long side of about COARSE_SIDE (at least 1)."""
    return max(1, int(math.log2(max(h, w) / COARSE_SIDE)) + 1)


def _pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [img]
    for _ in range(levels - 1):
        out.append(
            cv2.resize(
                out[-1], (max(1, out[-1].shape[1] // 2), max(1, out[-1].shape[0] // 2)), interpolation=cv2.INTER_AREA
            )
        )
    return out[::-1]  # coarse first


def _mask_pyramid(mask: np.ndarray, levels: int) -> list[np.ndarray]:
    """A uint8 valid mask's pyramid: a pixel is valid at a coarser level only if all it averages are."""
    return [(m > 0.999).astype(np.uint8) for m in _pyramid(mask.astype(np.float32), levels)]


@dataclass
class _Pair:
    """Two registration images and their valid masks (as :func:`_registration_pair` gives them), coarse
    to fine (the last level the images themselves); built once, shared by the tripod test and every
    round of ECC."""

    template: list[np.ndarray]
    image: list[np.ndarray]
    t_mask: list[np.ndarray]
    i_mask: list[np.ndarray]

    @classmethod
    def of(cls, template: np.ndarray, image: np.ndarray, t_mask: np.ndarray, i_mask: np.ndarray) -> _Pair:
        levels = _levels(*template.shape)
        pyramids = (_pyramid(template, levels), _pyramid(image, levels))
        return cls(*pyramids, _mask_pyramid(t_mask, levels), _mask_pyramid(i_mask, levels))

    def with_template_mask(self, t_mask: np.ndarray) -> _Pair:
        """The same images with another template mask (round 2's, what moved on its own left out)."""
        return replace(self, t_mask=_mask_pyramid(t_mask, len(self.template)))

    @property
    def full(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(template, image, t_mask, i_mask) at full size."""
        return self.template[-1], self.image[-1], self.t_mask[-1], self.i_mask[-1]


def _scale_warp(warp: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """A 3x3 warp in pixel coordinates of one image -> the same motion on the image resized by
    (sx, sy), with OpenCV's pixel-centre convention (x' = s x + (s - 1) / 2)."""
    sy = sx if sy is None else sy
    a = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
    return a @ warp @ np.linalg.inv(a)


def _ecc(template, image, t_mask, i_mask, guess, motion, criteria):
    """ECC with a validity mask for each image (OpenCV >= 5; OpenCV 4 takes the template's only),
    or with none when the masks are None (the clamped images have no gradient where they are
    invalid)."""
    if t_mask is None:
        return cv2.findTransformECC(template, image, guess, motion, criteria, None, 5)
    if hasattr(cv2, "findTransformECCWithMask"):
        return cv2.findTransformECCWithMask(template, image, t_mask, i_mask, guess, motion, criteria, 5)
    return cv2.findTransformECC(template, image, guess, motion, criteria, t_mask & i_mask, 5)


_MOTIONS = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
# ECC stops when its update is under eps (warp parameters: pixels for a translation); coarser levels
# only give the next a start. Fine/coarse 1e-5/1e-4 cost 2x the ECC time of 1e-4/1e-3 for the same
# benchmark error; 1e-3/1e-3 a third less again (bench/profile_folder.py: opening a 1 MP JPEG bracket
# 0.43 -> 0.26 s) with the same errors and real brackets' scores; 1e-3/1e-2 lost a 50 px handheld
# frame of a real bracket (the coarse levels must converge).
_FINE = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, ECC_EPS)
_COARSE = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, ECC_COARSE_EPS)


def _ecc_levels(pair: _Pair, warp: np.ndarray, model: str, levels: range, cc: float = 0.0) -> tuple[np.ndarray, float]:
    """ECC on ``pair``'s ``levels`` (indices, coarse first) from ``warp`` (3x3, full-size pixels) ->
    the warp found (full-size pixels) and the last level's correlation coefficient (``cc`` if no
    level had 64 pixels valid in both). Raises cv2.error when ECC fails."""
    h, w = pair.template[-1].shape
    finest = len(pair.template) - 1
    for level in levels:
        t, i, tm, im = pair.template[level], pair.image[level], pair.t_mask[level], pair.i_mask[level]
        if (tm & im).sum() < 64:
            continue
        sx, sy = t.shape[1] / w, t.shape[0] / h
        at_level = _scale_warp(warp, sx, sy)
        affine = model != "homography"
        guess = (at_level[:2] if affine else at_level).astype(np.float32)
        criteria = _FINE if level == finest else _COARSE
        # Masks for the translation; rigid and projective refinements went astray with them on plain
        # scenes (OpenCV 5.0) and are run on the clamped images alone.
        masks = (tm, im) if model == "translation" else (None, None)
        cc, found = _ecc(t, i, *masks, guess, _MOTIONS[model], criteria)
        found = np.vstack([found, [0.0, 0.0, 1.0]]) if affine else found.astype(np.float64)
        warp = _scale_warp(found, 1 / sx, 1 / sy)
    return warp, float(cc)


#: (start, warp, correlation): ECC from ``start`` taken down to the level before the finest.
Run = tuple[np.ndarray, np.ndarray, float]


def _failure(e: cv2.error) -> str:
    """A frame's reason when ECC raised ``e``."""
    return "ECC diverged" if "Iterations" in str(e) else "ECC failed"


def _ecc_pyramid(
    pair: _Pair,
    starts: list[np.ndarray],
    model: str,
    levels: int | None = None,
    gradient: np.ndarray | None = None,
    descended: tuple[Run, ...] = (),
) -> tuple[float, np.ndarray, float]:
    """ECC coarse to fine on ``pair`` (its last ``levels`` levels; all by default) from each of
    ``starts`` (3x3, full-size pixels), and on at full size for the ``descended`` runs (the tripod
    test's) -> (residual, warp, correlation) of the best result. Runs that reach the same warp
    (within SAME_WARP) by the level before the finest go on as one: real brackets' starts nearly
    always do, and the full-size level is most of the cost. Raises ValueError when ECC fails from
    every start."""
    h, w = pair.template[-1].shape
    finest = len(pair.template) - 1
    first = max(0, finest + 1 - (levels or finest + 1))
    runs, error = list(descended), None
    for start in starts:
        try:
            runs.append((start, *_ecc_levels(pair, start, model, range(first, finest))))
        except cv2.error as e:
            error = _failure(e)
    distinct: list[Run] = []
    for run in runs:
        if all(_max_displacement(run[1] @ np.linalg.inv(d[1]), h, w) >= SAME_WARP for d in distinct):
            distinct.append(run)
    every_start = [run[0] for run in descended] + list(starts)
    results = []
    for _, warp, cc in distinct:
        try:
            warp, cc = _ecc_levels(pair, warp, model, range(finest, finest + 1), cc)
        except cv2.error as e:
            error = _failure(e)
            continue
        if (
            model == "translation"
            and min(_max_displacement(warp @ np.linalg.inv(s), h, w) for s in every_start) > WANDER
        ):
            # a textured moving object or a plain scene pulled it away
            error = f"ECC wandered over {WANDER:g} px from every start"
            continue
        results.append((_residual(*pair.full, warp, gradient), warp, cc))
    if not results:
        raise ValueError(error or "ECC did not converge")
    return min(results, key=lambda r: r[0])  # residual on the masks given: callers compare on their own


def estimate_warp(pair: _Pair, mode: Mode, descended: Run | None = None) -> tuple[np.ndarray, float]:
    """The 3x3 warp W (template pixel -> image pixel) and ECC's correlation coefficient, for a
    registration pair; ``descended``: ECC from no motion already taken down to the level before the
    finest (the tripod test's run). Raises ValueError when the images cannot be registered.
    """
    template, image, t_mask, i_mask = pair.full
    h, w = template.shape
    both = t_mask & i_mask
    if both.mean() < MIN_VALID:
        raise ValueError(f"only {both.mean():.0%} of the pixels are well exposed in both frames")
    if float(template[both > 0].std()) < 0.01:
        raise ValueError("no texture to register on")
    # copies: OpenCV 5.0's phaseCorrelate multiplies its inputs by the window in place
    coarse_t, coarse_i = pair.template[0].copy(), pair.image[0].copy()
    window = cv2.createHanningWindow((coarse_t.shape[1], coarse_t.shape[0]), cv2.CV_32F)
    (sx, sy), _ = cv2.phaseCorrelate(coarse_t, coarse_i, window)
    sx, sy = sx * w / coarse_t.shape[1], sy * h / coarse_t.shape[0]
    # Two rounds. Round 1: ECC from a coarse phase correlation (large shifts) and from no motion (a
    # moving object can own the correlation peak of a plain scene). Round 2: the pixels the best
    # round-1 warp leaves far off (3x the median residual: what moved on its own) are masked out, and
    # ECC runs again from that warp and from no motion. The result with the smaller residual wins;
    # no motion wins if nothing beats it.
    phase = np.array([[1.0, 0.0, sx], [0.0, 1.0, sy], [0.0, 0.0, 1.0]])
    same = math.hypot(sx, sy) < SAME_START  # both starts in the same basin: one ECC run, not two
    if descended is not None:
        starts, runs = ([] if same else [phase]), (descended,)
    else:
        starts, runs = ([phase] if same else [phase, np.eye(3)]), ()
    gradient = _gradient(template)
    try:
        best = _ecc_pyramid(pair, starts, "translation", gradient=gradient, descended=runs)
    except ValueError:
        # ECC failed from both starts (a large handheld motion with some turn or zoom: phase correlation
        # finds no single shift); matched features give the motion's centre a start of its own
        best = _from_features(pair, gradient)
    best = _second_round(pair, best, gradient)
    # Homography: refined from the translation through a rigid motion, each stage kept only if it
    # lowers the residual and stays within 2 % of the image of the stage before (with few valid
    # pixels a free homography can shear the image onto a good local match).
    if mode == "homography":
        for stage in ("euclidean", "homography"):
            try:
                refined = _ecc_pyramid(pair, [best[1]], stage, levels=2, gradient=gradient)
            except ValueError:
                break
            if refined[0] < best[0] and _max_displacement(refined[1] @ np.linalg.inv(best[1]), h, w) < 0.02 * max(h, w):
                best = refined
    residual, warp, cc = best
    if residual >= _residual(*pair.full, np.eye(3), gradient):
        return np.eye(3), float(cc)
    if cc < MIN_CORRELATION:
        raise ValueError(f"the frames correlate only {cc:.2f} after registration")
    if _max_displacement(warp, h, w) > 0.25 * max(h, w):
        raise ValueError("the motion found exceeds a quarter of the image")
    return warp, float(cc)


#: Matched ORB features (RANSAC inliers of a rotation-scale-shift) needed to trust a feature start.
MIN_INLIERS = 50


def feature_motion(template: np.ndarray, image: np.ndarray, t_mask: np.ndarray, i_mask: np.ndarray) -> np.ndarray:
    """The motion between two registration images from matched ORB features: (H, W) float32 [0, 1] and
    their uint8 valid masks -> 3x3 warp (template pixel -> image pixel), a rotation, scale and shift
    fitted by RANSAC. Raises ValueError with fewer than :data:`MIN_INLIERS` inliers."""
    orb = cv2.ORB_create(4000)
    found = []
    for img, mask in ((template, t_mask), (image, i_mask)):
        keys, desc = orb.detectAndCompute((img * 255).astype(np.uint8), mask)
        found.append((keys, desc))
    (kt, dt), (ki, di) = found
    if dt is None or di is None:
        raise ValueError("no features to match")
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dt, di)
    if len(matches) < MIN_INLIERS:
        raise ValueError(f"only {len(matches)} features matched")
    src = np.float32([kt[m.queryIdx].pt for m in matches])
    dst = np.float32([ki[m.trainIdx].pt for m in matches])
    affine, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if affine is None or int(inliers.sum()) < MIN_INLIERS:
        raise ValueError("the matched features agree on no single motion")
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def _from_features(pair: _Pair, gradient: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Registration when ECC failed from its usual starts: ECC from the shift of the image centre that
    :func:`feature_motion` finds; if ECC fails from there too, that shift itself -> (residual, warp,
    correlation) as :func:`_ecc_pyramid` gives them. Raises ValueError when no features match."""
    h, w = pair.template[-1].shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    dx, dy = (feature_motion(*pair.full) @ centre)[:2] - centre[:2]
    start = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    try:
        return _ecc_pyramid(pair, [start], "translation", gradient=gradient)
    except ValueError:
        return _residual(*pair.full, start, gradient), start, _correlation(*pair.full, start)


def _correlation(
    template: np.ndarray, image: np.ndarray, t_mask: np.ndarray, i_mask: np.ndarray, warp: np.ndarray
) -> float:
    """ECC's correlation coefficient of image(warp) and the template over the pixels valid in both."""
    moved, valid = _overlap(template, image, t_mask, i_mask, warp)
    if valid.sum() < 16:
        return 0.0
    return float(np.corrcoef(template[valid], moved[valid])[0, 1])


def _overlap(
    template: np.ndarray, image: np.ndarray, t_mask: np.ndarray, i_mask: np.ndarray, warp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """image(warp) on the template's grid, and the bool mask of the pixels valid in both."""
    h, w = template.shape
    moved = cv2.warpPerspective(image, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    valid = (cv2.warpPerspective(i_mask, warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) & t_mask) > 0
    return moved, valid


def _second_round(
    pair: _Pair, best: tuple[float, np.ndarray, float], gradient: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """Round 2 of :func:`estimate_warp`: the pixels ``best``'s warp leaves far off (3x the median
    residual: what moved on its own) are masked out and ECC runs again from that warp and from no
    motion -> the result with the smaller residual, on the same pixels as ``best``'s."""
    template, image, t_mask, i_mask = pair.full
    h, w = template.shape
    both = t_mask & i_mask
    moved = cv2.warpPerspective(image, best[1], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    diff = np.abs(template - moved)
    valid = both > 0
    if valid.any():
        outliers = ((diff > max(3 * float(np.median(diff[valid])), 0.02)) & valid).astype(np.uint8)
        kept = t_mask & (1 - cv2.dilate(outliers, np.ones((5, 5), np.uint8)))
        # a second round only where something moved on its own (over 0.5 % of the valid pixels)
        if outliers.sum() > 0.005 * valid.sum() and (kept & i_mask).mean() >= MIN_VALID / 2:
            try:
                second = _ecc_pyramid(
                    pair.with_template_mask(kept), [best[1], np.eye(3)], "translation", gradient=gradient
                )
            except ValueError:  # (after a feature start, ECC can fail here too: best stands)
                second = None
            full = _residual(*pair.full, second[1], gradient) if second else math.inf
            if full < best[0]:  # on the same pixels as best's
                best = (full, second[1], second[2])
    return best


def _still(pair: _Pair) -> tuple[float | None, Run | None]:
    """The tripod test: ECC's translation from no motion, coarse to fine down to the level before the
    full size (half of it) -> (its correlation if it found under :data:`STILL` registration pixels
    there: the frame did not move, and the full-size level, most of the cost, could only refine that
    within the accuracy asked; else None), and the run for :func:`estimate_warp` to take on at full
    size (None when the frame did not move or ECC failed)."""
    finest = len(pair.template) - 1
    try:
        warp, cc = _ecc_levels(pair, np.eye(3), "translation", range(finest))
    except cv2.error:
        return None, None
    if finest > 0 and math.hypot(warp[0, 2], warp[1, 2]) < STILL and cc >= MIN_CORRELATION:
        return cc, None
    return None, (np.eye(3), warp, cc)


def _gradient(template: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(template, cv2.CV_32F, 1, 0), cv2.Sobel(template, cv2.CV_32F, 0, 1))


def _residual(
    template: np.ndarray,
    image: np.ndarray,
    t_mask: np.ndarray,
    i_mask: np.ndarray,
    warp: np.ndarray,
    gradient: np.ndarray | None = None,
) -> float:
    """How far image(warp) is from the template where it tells: the mean |difference| over the
    textured half of the pixels valid in both (flat regions match at any small shift), leaving out
    the largest 10 % (what moved on its own must not decide)."""
    moved, valid = _overlap(template, image, t_mask, i_mask, warp)
    if valid.sum() < 16:
        return math.inf
    gradient = _gradient(template) if gradient is None else gradient
    textured = valid & (gradient >= np.median(gradient[valid]))
    diffs = np.abs(template - moved)[textured]
    keep = max(1, int(0.9 * diffs.size))
    return float(np.partition(diffs, keep - 1)[:keep].mean())


def _describe(warp: np.ndarray, h: int, w: int) -> tuple[float, float, float]:
    """(dx, dy) of the image centre and the rotation in degrees of a 3x3 warp."""
    c = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    m = warp @ c
    return float(m[0] / m[2] - c[0]), float(m[1] / m[2] - c[1]), float(math.degrees(math.atan2(warp[1, 0], warp[0, 0])))


def _max_displacement(warp: np.ndarray, h: int, w: int) -> float:
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    moved = warp @ corners
    return float(np.abs(moved[:2] / moved[2] - corners[:2]).max())


def warp_frame(frame: np.ndarray, warp: np.ndarray, reference: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Resample every plane of ``frame`` (C, H, W) at ``warp`` (reference pixel -> frame pixel),
    bicubic, clipped to [0, 1]; pixels the frame does not cover take ``reference``'s times ``gain``
    (the frame's exposure relative to the reference's), clipped to 1."""
    h, w = frame.shape[-2:]
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    out = np.empty_like(frame)
    for c in range(frame.shape[0]):
        out[c] = cv2.warpPerspective(
            frame[c], warp, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0
        )
    covered = cv2.warpPerspective(
        np.ones((h, w), np.float32),
        warp,
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    np.clip(out, 0.0, 1.0, out=out)
    outside = covered < 0.999
    if outside.any():
        out[:, outside] = np.minimum(reference[:, outside] * np.float32(gain), 1.0)
    return out


def align_stack(
    frames: np.ndarray, ratios: tuple[float, ...] | list[float], mode: Mode, summaries: Summaries | None = None
) -> tuple[np.ndarray, list[FrameMotion]]:
    """Register frames (K, C, H, W) [0, 1], brightest first, onto frame 0, **in place** -> (the same
    array, aligned; the motion of each frame). ``mode`` "none" leaves the frames as they are.
    ``summaries`` (a dict to share with :func:`fusecli.deghost.deghost`) keeps each frame's half summary; a warped
    frame's is dropped."""
    check_mode(mode)
    motions = [FrameMotion(0, "reference")]
    if mode == "none":
        return frames, motions + [FrameMotion(k, "unaligned", reason="--align none") for k in range(1, len(frames))]
    h, w = frames.shape[-2:]
    size = registration_size(h, w)
    aligned = frames  # frame k is replaced once registered; frame 0 (the border fill) never is
    previous = 0  # the last frame aligned (or the reference)
    shrunk = {0: _shrink_stack(frames, 0, size, summaries)}
    for k in range(1, len(frames)):
        shrunk[k] = _shrink_stack(frames, k, size, summaries)
        try:
            pair = _Pair.of(*_registration_pair(shrunk[previous], ratios[previous], shrunk[k], ratios[k]))
            still, run = _still(pair) if mode == "translation" else (None, None)
            if still is not None:
                motions.append(FrameMotion(k, "static", correlation=still, reason=STILL_REASON))
                previous = k
                continue
            warp, cc = estimate_warp(pair, mode, run)
            warp = _scale_warp(warp, w / size[0], h / size[1])
        except ValueError as e:
            motions.append(FrameMotion(k, "unaligned", reason=str(e)))
            previous = k  # the next frame is registered against this one as it is (a tripod stack stays consistent)
            continue
        dx, dy, rot = _describe(warp, h, w)
        matrix = tuple(float(v) for v in (warp / warp[2, 2]).ravel())
        if _max_displacement(warp, h, w) < TINY:
            motions.append(FrameMotion(k, "static", dx, dy, rot, cc, matrix=matrix))
        else:
            aligned[k] = warp_frame(aligned[k], warp, aligned[0], ratios[k] / ratios[0])
            if summaries is not None:
                summaries.pop(k, None)
            shrunk[k] = _shrink_stack(aligned, k, size, summaries)
            motions.append(FrameMotion(k, "aligned", dx, dy, rot, cc, matrix=matrix))
        previous = k
    return aligned, motions
