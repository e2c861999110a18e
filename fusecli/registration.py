"""Registering one frame onto another (OpenCV ECC, coarse to fine): the two frames prepared as
exposure-normalised, log-compressed brightness with their valid masks, the tripod test, ECC from
several starts with a second round that leaves out what moved on its own, and matched features where
ECC fails. :mod:`fusecli.align` runs it over a stack; docs/alignment.md says why it is built this way.

Registration pixels are those of the images given (the stack shrunk to ``align.MAX_SIDE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np

from fusecli.choices import AlignMode

COARSE_SIDE = 128  # coarsest pyramid level's long side
MIN_CORRELATION = 0.6
MIN_VALID = 0.01  # share of pixels valid in both images
CLIP = 0.98  # a frame's pixel at this level or above is clipped
FLOOR = 0.004  # below this a frame's pixel is in its noise floor
WANDER = 3.0  # registration pixels: a translation ECC found this far from every start is not trusted
STILL = 0.1  # registration pixels: a frame found to move less at half size is not registered further
SAME_START = 0.5  # registration pixels: a phase-correlation start this close to no motion is no motion
# registration pixels: ECC runs this close at half size go on to full size as one (a turned frame's two
# runs can lie closer than a tenth of a pixel there and still end apart at full size)
SAME_WARP = 0.01
ECC_EPS = 1e-3  # ECC's convergence threshold at the finest level (registration pixels for a translation)
ECC_COARSE_EPS = 1e-3  # the same at the coarser levels (they only give the next a start)


class Registration(NamedTuple):
    """Two frames prepared for registration: exposure-normalised, log-compressed brightness
    (float32 [0, 1]) and where each is valid (uint8 0/1)."""

    template: np.ndarray
    image: np.ndarray
    t_mask: np.ndarray
    i_mask: np.ndarray


def prepare(
    template: tuple[np.ndarray, np.ndarray], t_ratio: float, image: tuple[np.ndarray, np.ndarray], i_ratio: float
) -> Registration:
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
    return Registration(
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
class Pair:
    """Two registration images and their valid masks (as :func:`prepare` gives them), coarse
    to fine (the last level the images themselves); built once, shared by the tripod test and every
    round of ECC."""

    template: list[np.ndarray]
    image: list[np.ndarray]
    t_mask: list[np.ndarray]
    i_mask: list[np.ndarray]

    @classmethod
    def of(cls, template: np.ndarray, image: np.ndarray, t_mask: np.ndarray, i_mask: np.ndarray) -> Pair:
        levels = _levels(*template.shape)
        pyramids = (_pyramid(template, levels), _pyramid(image, levels))
        return cls(*pyramids, _mask_pyramid(t_mask, levels), _mask_pyramid(i_mask, levels))

    def with_template_mask(self, t_mask: np.ndarray) -> Pair:
        """The same images with another template mask (round 2's, what moved on its own left out)."""
        return replace(self, t_mask=_mask_pyramid(t_mask, len(self.template)))

    @property
    def full(self) -> Registration:
        """The pair at full size."""
        return Registration(self.template[-1], self.image[-1], self.t_mask[-1], self.i_mask[-1])


def scale_warp(warp: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """A 3x3 warp in pixel coordinates of one image -> the same motion on the image resized by
    (sx, sy), with OpenCV's pixel-centre convention (x' = s x + (s - 1) / 2)."""
    sy = sx if sy is None else sy
    a = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
    return a @ warp @ np.linalg.inv(a)


def _ecc(template, image, masks, *, guess, motion, criteria):
    """ECC with a validity mask for each image (OpenCV >= 5; OpenCV 4 takes the template's only),
    or with none when the masks are None (the clamped images have no gradient where they are
    invalid). ``masks``: (template's, image's) uint8 masks, or (None, None)."""
    t_mask, i_mask = masks
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
# only give the next a start, but must converge, or a large handheld motion is lost there.
# bench/bench_align.py measures the registration error these settle.
_FINE = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, ECC_EPS)
_COARSE = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, ECC_COARSE_EPS)


class Warp(NamedTuple):
    """A 3x3 warp (template pixel -> image pixel) and ECC's correlation coefficient for it."""

    warp: np.ndarray
    correlation: float


class Run(NamedTuple):
    """ECC from ``start`` (3x3) taken down to the level before the finest: the warp and correlation there."""

    start: np.ndarray
    warp: np.ndarray
    correlation: float


class Fit(NamedTuple):
    """A registration result: its residual (:func:`_residual`), the 3x3 warp and ECC's correlation."""

    residual: float
    warp: np.ndarray
    correlation: float


def _ecc_levels(pair: Pair, warp: np.ndarray, model: str, levels: range, cc: float = 0.0) -> Warp:
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
        at_level = scale_warp(warp, sx, sy)
        affine = model != "homography"
        guess = (at_level[:2] if affine else at_level).astype(np.float32)
        criteria = _FINE if level == finest else _COARSE
        # Masks for the translation; rigid and projective refinements went astray with them on plain
        # scenes (OpenCV 5.0) and are run on the clamped images alone.
        masks = (tm, im) if model == "translation" else (None, None)
        cc, found = _ecc(t, i, masks, guess=guess, motion=_MOTIONS[model], criteria=criteria)
        found = np.vstack([found, [0.0, 0.0, 1.0]]) if affine else found.astype(np.float64)
        warp = scale_warp(found, 1 / sx, 1 / sy)
    return Warp(warp, float(cc))


def _failure(e: cv2.error) -> str:
    """A frame's reason when ECC raised ``e``."""
    return "ECC diverged" if "Iterations" in str(e) else "ECC failed"


def _ecc_pyramid(
    pair: Pair,
    starts: list[np.ndarray],
    model: str,
    *,
    levels: int | None = None,
    gradient: np.ndarray | None = None,
    descended: tuple[Run, ...] = (),
) -> Fit:
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
            runs.append(Run(start, *_ecc_levels(pair, start, model, range(first, finest))))
        except cv2.error as e:
            error = _failure(e)
    distinct: list[Run] = []
    for run in runs:
        if all(max_displacement(run.warp @ np.linalg.inv(d.warp), h, w) >= SAME_WARP for d in distinct):
            distinct.append(run)
    every_start = [run.start for run in descended] + list(starts)
    results = []
    for _, warp, cc in distinct:
        try:
            warp, cc = _ecc_levels(pair, warp, model, range(finest, finest + 1), cc)
        except cv2.error as e:
            error = _failure(e)
            continue
        if (
            model == "translation"
            and min(max_displacement(warp @ np.linalg.inv(s), h, w) for s in every_start) > WANDER
        ):
            # a textured moving object or a plain scene pulled it away
            error = f"ECC wandered over {WANDER:g} px from every start"
            continue
        results.append(Fit(_residual(pair.full, warp, gradient), warp, cc))
    if not results:
        raise ValueError(error or "ECC did not converge")
    return min(results, key=lambda r: r.residual)  # on the masks given: callers compare on their own


def estimate_warp(pair: Pair, mode: AlignMode, descended: Run | None = None) -> Warp:
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
                refined = _ecc_pyramid(pair, [best.warp], stage, levels=2, gradient=gradient)
            except ValueError:
                break
            moved = max_displacement(refined.warp @ np.linalg.inv(best.warp), h, w)
            if refined.residual < best.residual and moved < 0.02 * max(h, w):
                best = refined
    residual, warp, cc = best
    if residual >= _residual(pair.full, np.eye(3), gradient):
        return Warp(np.eye(3), float(cc))
    if cc < MIN_CORRELATION:
        raise ValueError(f"the frames correlate only {cc:.2f} after registration")
    if max_displacement(warp, h, w) > 0.25 * max(h, w):
        raise ValueError("the motion found exceeds a quarter of the image")
    return Warp(warp, float(cc))


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


def _from_features(pair: Pair, gradient: np.ndarray) -> Fit:
    """Registration when ECC failed from its usual starts: ECC from the shift of the image centre that
    :func:`feature_motion` finds; if ECC fails from there too, that shift itself. Raises ValueError
    when no features match."""
    h, w = pair.template[-1].shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    dx, dy = (feature_motion(*pair.full) @ centre)[:2] - centre[:2]
    start = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    try:
        return _ecc_pyramid(pair, [start], "translation", gradient=gradient)
    except ValueError:
        return Fit(_residual(pair.full, start, gradient), start, _correlation(pair.full, start))


def _correlation(reg: Registration, warp: np.ndarray) -> float:
    """ECC's correlation coefficient of image(warp) and the template over the pixels valid in both."""
    moved, valid = _overlap(reg, warp)
    if valid.sum() < 16:
        return 0.0
    return float(np.corrcoef(reg.template[valid], moved[valid])[0, 1])


def _overlap(reg: Registration, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """image(warp) on the template's grid, and the bool mask of the pixels valid in both."""
    h, w = reg.template.shape
    moved = cv2.warpPerspective(reg.image, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    shifted = cv2.warpPerspective(reg.i_mask, warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return moved, (shifted & reg.t_mask) > 0


def _second_round(pair: Pair, best: Fit, gradient: np.ndarray) -> Fit:
    """Round 2 of :func:`estimate_warp`: the pixels ``best``'s warp leaves far off (3x the median
    residual: what moved on its own) are masked out and ECC runs again from that warp and from no
    motion -> the result with the smaller residual, on the same pixels as ``best``'s."""
    template, image, t_mask, i_mask = pair.full
    h, w = template.shape
    both = t_mask & i_mask
    moved = cv2.warpPerspective(image, best.warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    diff = np.abs(template - moved)
    valid = both > 0
    if valid.any():
        outliers = ((diff > max(3 * float(np.median(diff[valid])), 0.02)) & valid).astype(np.uint8)
        kept = t_mask & (1 - cv2.dilate(outliers, np.ones((5, 5), np.uint8)))
        # a second round only where something moved on its own (over 0.5 % of the valid pixels)
        if outliers.sum() > 0.005 * valid.sum() and (kept & i_mask).mean() >= MIN_VALID / 2:
            try:
                second = _ecc_pyramid(
                    pair.with_template_mask(kept), [best.warp, np.eye(3)], "translation", gradient=gradient
                )
            except ValueError:  # (after a feature start, ECC can fail here too: best stands)
                second = None
            full = _residual(pair.full, second.warp, gradient) if second else math.inf
            if full < best.residual:  # on the same pixels as best's
                best = Fit(full, second.warp, second.correlation)
    return best


class Tripod(NamedTuple):
    """The tripod test's verdict: ``correlation`` when the frame did not move (else None), and the
    run for :func:`estimate_warp` to take on at full size (None when it did not move or ECC failed)."""

    correlation: float | None
    run: Run | None


def tripod_test(pair: Pair) -> Tripod:
    """The tripod test: ECC's translation from no motion, coarse to fine down to the level before the
    full size (half of it). A frame found to move under :data:`STILL` registration pixels there did
    not move: the full-size level, most of the cost, could only refine that within the accuracy asked."""
    finest = len(pair.template) - 1
    try:
        warp, cc = _ecc_levels(pair, np.eye(3), "translation", range(finest))
    except cv2.error:
        return Tripod(None, None)
    if finest > 0 and math.hypot(warp[0, 2], warp[1, 2]) < STILL and cc >= MIN_CORRELATION:
        return Tripod(cc, None)
    return Tripod(None, Run(np.eye(3), warp, cc))


def _gradient(template: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(template, cv2.CV_32F, 1, 0), cv2.Sobel(template, cv2.CV_32F, 0, 1))


def _residual(reg: Registration, warp: np.ndarray, gradient: np.ndarray | None = None) -> float:
    """How far image(warp) is from the template where it tells: the mean |difference| over the
    textured half of the pixels valid in both (flat regions match at any small shift), leaving out
    the largest 10 % (what moved on its own must not decide)."""
    moved, valid = _overlap(reg, warp)
    if valid.sum() < 16:
        return math.inf
    gradient = _gradient(reg.template) if gradient is None else gradient
    textured = valid & (gradient >= np.median(gradient[valid]))
    diffs = np.abs(reg.template - moved)[textured]
    keep = max(1, int(0.9 * diffs.size))
    return float(np.partition(diffs, keep - 1)[:keep].mean())


def describe_warp(warp: np.ndarray, h: int, w: int) -> tuple[float, float, float]:
    """(dx, dy) of the image centre and the rotation in degrees of a 3x3 warp."""
    c = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    m = warp @ c
    return float(m[0] / m[2] - c[0]), float(m[1] / m[2] - c[1]), float(math.degrees(math.atan2(warp[1, 0], warp[0, 0])))


def max_displacement(warp: np.ndarray, h: int, w: int) -> float:
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    moved = warp @ corners
    return float(np.abs(moved[:2] / moved[2] - corners[:2]).max())


def intensity_map(src: np.ndarray, dst: np.ndarray, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The intensity mapping between two exposures of one scene (Grossberg & Nayar 2003): matched
    quantiles of the same pixels in both, a monotone curve src -> dst robust to what moved. 1-D
    arrays of equal length -> (src knots, dst knots), each increasing, for np.interp."""
    q = np.linspace(0.0, 1.0, n)
    a, b = quantiles(src, q), quantiles(dst, q)
    return np.maximum.accumulate(a), np.maximum.accumulate(b)


def quantiles(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile(x, q) (its default linear method, the same values) from one sort: 1-D x, q in
    [0, 1] -> (len(q),) float64. np.quantile partitions once for each quantile; one sort serves all."""
    s = np.sort(x)
    pos = q * (s.size - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, s.size - 1)
    t = pos - lo
    a, b = s[lo], s[hi]
    # numpy's _lerp, so that the values are np.quantile's to the last bit
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
