"""Synthetic RAW brackets with labels, from real HDR radiance maps or procedural scenes.

The method of the NTIRE 2024 BracketIRE data, in the packed-RAW domain fusecli works in:

1. linear RGB radiance (Rec.709 primaries, as .exr/.hdr maps are) with a random crop, scale, mirror
   and illuminant tint -> XYZ -> camera RGB through a real camera's colour matrix (the Canon EOS
   550D's DNG ColorMatrix1, from the MIT-licensed ``colorchart.dng``); the tint's camera response is
   the AsShotNeutral written to the DNG, so undoing the white balance gives the scene back;
2. a Bayer mosaic of the chosen CFA phase;
3. the 1/1 exposure scaled so that a chosen share of its pixels clips; the other frames at the
   chosen ratios (default 1, 1/4, 1/16);
4. Poisson (shot) + Gaussian (read) noise, clipping at the white level, quantisation to 12 or 14
   bits above a black level; written as DNGs that rawpy reads back.

The label (see :func:`render_label`) is computed from the clean, unclipped radiance of the 1/1
exposure in the same packed-RAW [0, 1] domain as the frames.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fusecli.develop import RGB_TO_XYZ, linear_to_srgb, srgb_to_linear
from fusecli.errors import FuseError, UsageError
from fusecli.io.dng import write_dng
from fusecli.io.image import read_radiance, write_label
from fusecli.io.metadata import Capture
from fusecli.io.raw import CFA_PATTERNS, CameraInfo, pack_bayer

#: XYZ -> camera RGB of the Canon EOS Kiss X4 / 550D (DNG ColorMatrix1, D65), as stored in the real
#: colorchart.dng of ../shared/data/real (tinydng, MIT licence).
CANON_550D_XYZ_TO_CAM = np.array(
    [[0.6461, -0.1164, -0.0857], [-0.3825, 1.1597, 0.2534], [-0.0416, 0.1540, 0.6039]], dtype=np.float64
)


@dataclass
class SynthConfig:
    """How brackets are synthesised. Ranges are (low, high) sampled uniformly (log-uniformly for noise)."""

    width: int = 512  # mosaic size, even
    height: int = 384
    ratios: tuple[float, ...] = (1.0, 0.25, 0.0625)
    clip_share: tuple[float, float] = (0.03, 0.15)  # share of 1/1-frame pixels at the white level
    bits: tuple[int, ...] = (12, 14)
    cfa: str | None = None  # None: a random phase per stack
    shot_noise: tuple[float, float] = (2e-5, 5e-4)  # variance per unit signal ([0, 1] units)
    read_noise: tuple[float, float] = (2e-4, 1.5e-3)  # standard deviation ([0, 1] units)
    scale: tuple[float, float] = (0.6, 1.0)  # resampling of the radiance before the crop
    tint: float = 0.15  # illuminant tint range (+- on red/blue)
    base_time: tuple[int, int] = (4, 8)  # the 1/1 frame's exposure is 2^-n s, n in this range (1/16 .. 1/256)
    label_knee: float = 0.5
    label_detail_radius: int = 16  # bilateral-filter radius of the label's base layer, in packed pixels
    shift: float = 0.0  # handheld: each frame after the first moves by up to this many mosaic pixels (x and y)
    rotate: float = 0.0  # ... and turns by up to this many degrees about the image centre
    moving_object: bool = False  # a small textured disc that moves between frames (a ghost)

    def __post_init__(self) -> None:
        if (
            self.width % 2
            or self.height % 2
            or not 16 <= min(self.width, self.height) <= max(self.width, self.height) <= 8192
        ):
            raise UsageError(
                f"synth size {self.width}x{self.height}: width and height must be even, at least 16 and at most 8192"
            )
        r = self.ratios
        if len(r) < 2 or r[0] != 1.0 or any(b >= a or b <= 0 for a, b in zip(r, r[1:])):
            raise FuseError(f"synth ratios {r}: expected 1 first, then strictly decreasing values > 0")
        if self.cfa is not None and self.cfa.upper() not in CFA_PATTERNS:
            raise FuseError(f"synth CFA {self.cfa!r}: expected one of {', '.join(CFA_PATTERNS)}")


@dataclass
class SynthBracket:
    """One synthesised bracket in memory: what the DNGs and the label file hold."""

    mosaics: np.ndarray  # (K, H, W) uint16 raw values, brightest first
    label: np.ndarray  # (4, H/2, W/2) float32 in [0, 1], R G1 G2 B
    camera: CameraInfo
    exposures: list[Capture]
    params: dict = field(default_factory=dict)
    scene: np.ndarray | None = None  # (4, H/2, W/2) float32 >= 0: the 1/1 frame noiseless and unclipped (1 = white)


# --- the label ----------------------------------------------------------------------------------


def _highlight_curve(e: np.ndarray, knee: float, e_max: float) -> np.ndarray:
    """Identity up to ``knee``, then logarithmic with slope 1 at the knee, reaching 1 at ``e_max``."""
    d = e_max - knee
    lo, hi = 1e-9, 1e9  # solve (1 - knee) a = log(1 + a d) for the slope-1 join
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if (1 - knee) * mid - math.log1p(mid * d) < 0:
            lo = mid
        else:
            hi = mid
    a = lo
    out = np.where(e <= knee, e, knee + (1 - knee) * np.log1p(a * np.clip(e - knee, 0, d)) / math.log1p(a * d))
    return out.astype(np.float32)


def render_label(clean: np.ndarray, ratios: Sequence[float], knee: float = 0.5, radius: int = 16) -> np.ndarray:
    """The reference fusion of a bracket, from its clean radiance. clean: (4, h, w) >= 0 in units of
    the 1/1 frame's full scale (unclipped, noise-free) -> (4, h, w) float32 in [0, 1].

    Tone mapping by base and detail (Durand & Dorsey 2002) on the per-pixel brightness m (max of the
    planes, so colour ratios are kept): the log of m is split by a bilateral filter (range sigma
    0.7 in natural-log units: texture goes to the detail layer, edges of more than ~5:1 stay in the
    base) into a base and a detail layer; the base goes through a global, monotone curve (identity below
    ``knee``, logarithmic above, reaching 1 where the darkest frame clips); the detail is added back
    unchanged. So dark regions keep the 1/1 exposure's brightness exactly, highlights are compressed
    without brightness inversion (monotone base), local contrast is kept (full detail), and the
    edge-stopping base leaves no halos (a guided filter leaks across strong edges; a test holds the
    dark side of a 100:1 edge at its brightness right up to the edge). Each value is then clamped
    between the darkest and the brightest clean frame at that pixel, so a weighting of the frames can
    reach the label.
    """
    m = clean.max(axis=0)
    e_max = 1.0 / min(ratios)
    log_m = np.log(np.maximum(m, 1e-6)).astype(np.float32)
    base = cv2.bilateralFilter(log_m, d=2 * radius + 1, sigmaColor=0.7, sigmaSpace=radius)
    detail = log_m - base
    target_base = np.log(np.maximum(_highlight_curve(np.exp(base), knee, e_max), 1e-6))
    # Below the knee the curve is the identity: keep the 1/1 brightness exactly there.
    m_out = np.where(np.exp(base) <= knee, m, np.exp(target_base + detail))
    gain = m_out / np.maximum(m, 1e-6)
    label = clean * gain[None]
    brightest = np.minimum(clean * ratios[0], 1.0)
    darkest = np.minimum(clean * ratios[-1], 1.0)
    return np.clip(label, darkest, brightest).astype(np.float32)


# --- scenes -------------------------------------------------------------------------------------


def procedural_scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural radiance map (height, width, 3) float32 >= 0: a sky gradient, textured ground
    with shadows, bright windows and a light source with its glow (dynamic range ~1e4)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= height
    x /= width

    def noise(octaves: int = 5) -> np.ndarray:
        out = np.zeros((height, width), np.float32)
        for o in range(octaves):
            cells = 2 ** (o + 2)
            small = rng.random((cells + 1, cells + 1)).astype(np.float32)
            out += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) / 2**o
        return out / 2

    horizon = rng.uniform(0.35, 0.65) + 0.08 * (noise(3) - 0.5)
    sky_colour = np.array([rng.uniform(0.5, 0.8), rng.uniform(0.7, 0.9), 1.0], np.float32)
    sky = (rng.uniform(4, 12) * (1.2 - y) + 3 * noise(4))[..., None] * sky_colour
    ground_colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    texture = 0.1 + noise(6) ** 2
    shadow = np.where(noise(2) > 0.55, rng.uniform(0.05, 0.2), 1.0).astype(np.float32)
    ground = (rng.uniform(0.3, 1.2) * texture * shadow)[..., None] * ground_colour
    scene = np.where((y < horizon)[..., None], sky, ground)
    for _ in range(rng.integers(1, 5)):  # lit windows / signs
        h0, w0 = rng.uniform(0.05, 0.2) * height, rng.uniform(0.03, 0.15) * width
        cy, cx = rng.uniform(horizon.mean(), 1.0) * height, rng.uniform(0, 1) * width
        box = (np.abs(y * height - cy) < h0 / 2) & (np.abs(x * width - cx) < w0 / 2)
        scene[box] = rng.uniform(8, 40) * rng.uniform(0.6, 1.0, 3).astype(np.float32)
    sy, sx = rng.uniform(0.05, 0.4) * height, rng.uniform(0.1, 0.9) * width
    r2 = ((y * height - sy) ** 2 + (x * width - sx) ** 2) / (0.02 * min(height, width)) ** 2
    scene += (rng.uniform(200, 2000) * np.exp(-r2) + rng.uniform(5, 30) * np.exp(-r2 / 60))[..., None] * np.array(
        [1.0, 0.95, 0.85], np.float32
    )
    return np.maximum(scene, 0).astype(np.float32)


# --- rendering a bracket ------------------------------------------------------------------------


def _crop_scene(radiance: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    h, w = cfg.height, cfg.width
    scale = rng.uniform(*cfg.scale)
    scale = max(scale, h / radiance.shape[0], w / radiance.shape[1])  # the crop must fit
    if abs(scale - 1) > 1e-3:
        size = (max(w, round(radiance.shape[1] * scale)), max(h, round(radiance.shape[0] * scale)))
        radiance = cv2.resize(radiance, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top = int(rng.integers(0, radiance.shape[0] - h + 1))
    left = int(rng.integers(0, radiance.shape[1] - w + 1))
    crop = radiance[top : top + h, left : left + w]
    flip_h = bool(rng.integers(2))  # horizontal only: skies stay on top
    if flip_h:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32), {"scale": scale, "crop": [top, left, h, w], "flip_h": flip_h}


def render_bracket(
    radiance: np.ndarray, cfg: SynthConfig, rng: np.random.Generator, source: str = "procedural"
) -> SynthBracket:
    """Synthesise one bracket from a radiance map (H, W, 3) float32 >= 0 (linear Rec.709)."""
    if radiance.shape[0] < cfg.height or radiance.shape[1] < cfg.width:
        if radiance.shape[0] * 2 < cfg.height or radiance.shape[1] * 2 < cfg.width:
            raise FuseError(
                f"{source}: radiance map {radiance.shape[1]}x{radiance.shape[0]} is too small for "
                f"{cfg.width}x{cfg.height} brackets"
            )
    crop, params = _crop_scene(radiance, cfg, rng)
    tint = np.array([1 + rng.uniform(-cfg.tint, cfg.tint), 1.0, 1 + rng.uniform(-cfg.tint, cfg.tint)])
    rgb_to_cam = CANON_550D_XYZ_TO_CAM @ RGB_TO_XYZ @ np.diag(tint)
    neutral = rgb_to_cam @ np.ones(3)  # camera response to a white surface under the tinted light
    cam = np.maximum(crop @ rgb_to_cam.T.astype(np.float32), 0)
    cam /= float(neutral.max())

    cams, motion = [cam] * len(cfg.ratios), None
    if cfg.shift > 0 or cfg.rotate > 0 or cfg.moving_object:  # drawn only then: static brackets stay as they were
        cams, motion = _handheld(cam, cfg, np.random.default_rng(int(rng.integers(2**63))))
    cfa = (cfg.cfa or CFA_PATTERNS[int(rng.integers(len(CFA_PATTERNS)))]).upper()
    channel = {"R": 0, "G": 1, "B": 2}

    def to_mosaic(c: np.ndarray) -> np.ndarray:
        m = np.empty(c.shape[:2], np.float32)
        for i, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            m[dy::2, dx::2] = c[dy::2, dx::2, channel[cfa[i]]]
        return m

    mosaic = to_mosaic(cams[0])

    share = rng.uniform(*cfg.clip_share)
    level = float(np.quantile(mosaic, 1 - share))
    exposure_scale = 1.0 / max(level, 1e-12)
    clean = mosaic * exposure_scale  # the 1/1 frame before clipping and noise, in full-scale units

    bits = int(rng.choice(cfg.bits))
    black = float(rng.choice([64, 128, 256, 512]) * (4 if bits == 14 else 1))
    white = float(2**bits - 1 - rng.integers(0, 2**bits // 16))
    gain = math.exp(rng.uniform(math.log(cfg.shot_noise[0]), math.log(cfg.shot_noise[1])))
    read = math.exp(rng.uniform(math.log(cfg.read_noise[0]), math.log(cfg.read_noise[1])))
    mosaics = np.empty((len(cfg.ratios),) + mosaic.shape, np.uint16)
    for k, r in enumerate(cfg.ratios):
        frame_clean = clean if cams[k] is cams[0] else to_mosaic(cams[k]) * exposure_scale
        signal = np.minimum(frame_clean * r, 4.0)  # beyond 4x full scale the value is clipped anyway
        noisy = rng.poisson(signal / gain).astype(np.float32) * gain + rng.normal(0.0, read, signal.shape).astype(
            np.float32
        )
        mosaics[k] = np.clip(np.round(noisy * (white - black) + black), 0, white).astype(np.uint16)

    label = render_label(pack_bayer(clean, cfa), cfg.ratios, cfg.label_knee, cfg.label_detail_radius)
    camera = CameraInfo(
        make="fusecli",
        model="synthetic (Canon EOS 550D colour)",
        cfa=cfa,
        black_level=(black,) * 4,
        white_level=white,
        white_balance=(float(neutral[1] / neutral[0]), 1.0, float(neutral[1] / neutral[2])),
        color_matrix=tuple(float(v) for v in CANON_550D_XYZ_TO_CAM.ravel()),
    )
    base_time = 2.0 ** -int(rng.integers(cfg.base_time[0], cfg.base_time[1] + 1))
    iso = float(rng.choice([100, 200, 400, 800, 1600]))
    start = datetime(2026, 1, 1, 12, 0, 0) + timedelta(seconds=int(rng.integers(0, 86400 * 300)))
    exposures = [
        Capture.shot(time=base_time * r, aperture=8.0, iso=iso, timestamp=start + timedelta(seconds=k))
        for k, r in enumerate(cfg.ratios)
    ]
    params.update(
        source=source,
        cfa=cfa,
        bits=bits,
        black=black,
        white=white,
        ratios=list(cfg.ratios),
        clip_share=share,
        shot_noise_gain=gain,
        read_noise_std=read,
        tint=tint.tolist(),
        base_time=base_time,
        iso=iso,
        label={
            "method": "base/detail, bilateral filter, log highlight curve",
            "knee": cfg.label_knee,
            "radius": cfg.label_detail_radius,
        },
    )
    if motion is not None:
        params["motion"] = motion
    return SynthBracket(
        mosaics=mosaics, label=label, camera=camera, exposures=exposures, params=params, scene=pack_bayer(clean, cfa)
    )


def _handheld(cam: np.ndarray, cfg: SynthConfig, rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """Per-frame scenes (H, W, 3) of a handheld bracket: frame k is the reference scene turned by
    theta_k about the image centre and moved by (tx_k, ty_k) (a point p of the reference is at
    R p + t in frame k; bicubic, reflected borders), and, with ``moving_object``, a textured disc
    that moves by 6 % of the width per frame. The ground truth, in packed-plane pixels (half the
    mosaic's; the motion of the image centre), is returned for synth.json."""
    h, w = cam.shape[:2]
    centre = ((w - 1) / 2, (h - 1) / 2)
    cams, frames = [cam], [{"frame": 0, "dx": 0.0, "dy": 0.0, "rotation_deg": 0.0}]
    for k in range(1, len(cfg.ratios)):
        tx, ty = (float(rng.uniform(-cfg.shift, cfg.shift)) for _ in range(2))
        theta = float(rng.uniform(-cfg.rotate, cfg.rotate))
        m = cv2.getRotationMatrix2D(centre, -theta, 1.0)  # OpenCV's angle is counter-clockwise on screen
        m[:, 2] += (tx, ty)
        warped = cv2.warpAffine(cam, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        cams.append(np.maximum(warped, 0))
        frames.append({"frame": k, "dx": tx / 2, "dy": ty / 2, "rotation_deg": theta})
    out = {"frames": frames, "units": "packed-plane pixels; motion of the image centre, reference -> frame"}
    if cfg.moving_object:
        radius = 0.07 * min(h, w)
        start = (rng.uniform(0.25, 0.45) * w, rng.uniform(0.3, 0.7) * h)
        step = (0.06 * w, 0.02 * h)
        colour = np.array([rng.uniform(0.3, 1.0) for _ in range(3)], np.float32)
        level = np.float32(np.median(cam.max(axis=-1)))  # a mid-tone: well exposed in the 1/1 frame
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        texture = 0.7 + 0.3 * np.sin(xx / 3.0) * np.sin(yy / 4.0)
        for k in range(len(cams)):
            cx, cy = start[0] + k * step[0], start[1] + k * step[1]
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2) <= radius**2
            scene = cams[k].copy()
            scene[disc] = (level * texture[disc])[:, None] * colour
            cams[k] = scene
        out["object"] = {
            "radius": radius / 2,
            "centres": [[(start[0] + k * step[0]) / 2, (start[1] + k * step[1]) / 2] for k in range(len(cams))],
        }
    return cams, out


def write_bracket(folder: Path, bracket: SynthBracket) -> None:
    """Write a bracket as ``folder/frame_1.dng ... frame_K.dng`` (brightest first), ``label.tif`` and
    ``synth.json``. Written to a hidden temporary folder, then renamed: all or nothing."""
    folder = Path(folder)
    if folder.exists():
        raise FuseError(f"{folder}: already exists; fusecli synth never overwrites a stack")
    tmp = folder.parent / f".{folder.name}.part"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for k, (mosaic, exposure) in enumerate(zip(bracket.mosaics, bracket.exposures), 1):
            write_dng(tmp / f"frame_{k}.dng", mosaic, bracket.camera, exposure, software="fusecli synth")
        write_label(tmp / "label.tif", bracket.label)
        (tmp / "synth.json").write_text(json.dumps(bracket.params, indent=2) + "\n")
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def synthesise(
    radiance_paths: Sequence[Path],
    out: Path,
    *,
    stacks_per_map: int = 1,
    procedural: int = 0,
    cfg: SynthConfig | None = None,
    seed: int = 0,
    display: DisplayConfig | None = None,
) -> list[Path]:
    """Write ``stacks_per_map`` brackets per radiance map plus ``procedural`` procedural ones into
    ``out`` (one folder each); returns the folders written. RAW brackets (DNG), or with ``display``
    display-referred ones (PNG frames around a normal exposure)."""
    cfg = cfg or SynthConfig()
    out = Path(out)
    jobs: list[tuple[str, Path | None]] = [
        (p.stem, p) for p in map(Path, radiance_paths) for _ in range(stacks_per_map)
    ]
    jobs += [("procedural", None)] * procedural
    if not jobs:
        raise FuseError("fusecli synth: give at least one radiance map (.exr/.hdr) or --procedural N")
    for _, p in jobs:
        if p is not None and not p.is_file():
            raise FuseError(f"{p}: no such file")
    out.mkdir(parents=True, exist_ok=True)
    written, counts, cache = [], {}, {}
    for i, (stem, path) in enumerate(jobs):
        rng = np.random.default_rng([seed, i])
        if path is None:
            radiance = procedural_scene(cfg.height, cfg.width, rng)
        else:
            if path not in cache:
                cache[path] = read_radiance(path)
            radiance = cache[path]
        counts[stem] = counts.get(stem, 0) + 1
        folder = out / f"{stem.lower()}_{counts[stem]:03d}"
        if display is not None:
            shown = render_display_bracket(radiance, display, rng)
            shown.params["seed"] = [seed, i]
            write_display_bracket(folder, shown)
        else:
            bracket = render_bracket(radiance, cfg, rng, source=str(path.name if path else "procedural"))
            bracket.params["seed"] = [seed, i]
            write_bracket(folder, bracket)
        written.append(folder)
    return written


# --- display-referred brackets (camera JPEGs, PNGs, TIFFs from raw converters) ---------------------


#: Camera tone curves, linear [0, 1] -> display [0, 1]: what phones and cameras put in their JPEGs.
def _curve_srgb(x: np.ndarray) -> np.ndarray:
    return linear_to_srgb(x)


def _curve_gamma_shoulder(x: np.ndarray) -> np.ndarray:
    """A soft shoulder on linear values (extended Reinhard, white at 1), then gamma 2.2: highlights
    roll off as most camera JPEG engines do; mid-grey 0.18 lands at 0.54 (sRGB: 0.46)."""
    x = np.clip(x, 0, 1)
    shouldered = x * (1 + x / 4) / (1 + x) / 0.625
    return (np.clip(shouldered, 0, 1) ** (1 / 2.2)).astype(np.float32)


def _curve_filmic(x: np.ndarray) -> np.ndarray:
    """Hable's filmic curve (Uncharted 2) scaled so that 1 maps to 1, then sRGB-encoded."""

    def hable(v):
        a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
        return ((v * (a * v + c * b) + d * e) / (v * (a * v + b) + d * f)) - e / f

    w = 4.0
    return linear_to_srgb(np.clip(hable(np.clip(x, 0, 1) * w) / hable(w), 0, 1))


CAMERA_CURVES = {"srgb": _curve_srgb, "gamma_shoulder": _curve_gamma_shoulder, "filmic": _curve_filmic}


@dataclass
class DisplayConfig:
    """Display-referred brackets: K frames around a normal exposure, through a camera tone curve,
    8-bit and (sometimes) JPEG. Ranges are (low, high) sampled uniformly."""

    size: int = 256
    frames: int = 3
    ev_step: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
    phone_share: float = 0.3  # brackets whose reference is the brightest frame (EV0, -2, -4), as phones shoot
    key: tuple[float, float] = (-1.0, 1.0)  # the normal exposure puts the median at 0.18 x 2^this
    jpeg_share: float = 0.6
    jpeg_quality: tuple[int, int] = (70, 96)
    ratio_error_ev: float = 1.0 / 3.0  # ratios passed on are off by up to this many EV
    noise: tuple[float, float] = (0.0, 0.01)  # read noise std, linear units
    scale: tuple[float, float] = (0.5, 1.0)
    shadow_knee: float = 0.05  # below this (reference units) the label lifts shadows from brighter frames
    shadow_slope: float = 0.6
    highlight_knee: float = 0.5
    detail_radius: int = 8


@dataclass
class DisplayBracket:
    """One display-referred bracket in memory: frames and label as fusecli decodes them (sRGB
    inverse of the stored 8-bit values), brightest first."""

    frames: np.ndarray  # (K, 3, H, W) float32 [0, 1]
    ratios: np.ndarray  # (K,) as passed on (with the ratio error), first 1
    label: np.ndarray  # (3, H, W) float32 [0, 1]
    reference: int  # index of the normal exposure
    params: dict = field(default_factory=dict)


def _tone_map_base(base: np.ndarray, cfg: DisplayConfig, lift_max: float, e_max: float) -> np.ndarray:
    """A global monotone curve on log brightness (reference units): shadows below the knee lifted
    with slope ``shadow_slope`` (by at most ``lift_max``), highlights above the knee compressed
    logarithmically to reach 1 where the darkest frame clips (``e_max``)."""
    knee = math.log(cfg.shadow_knee)
    lifted = np.where(base < knee, base + np.minimum((1 - cfg.shadow_slope) * (knee - base), math.log(lift_max)), base)
    high = np.log(np.maximum(_highlight_curve(np.exp(lifted), cfg.highlight_knee, max(e_max, 1.01)), 1e-9))
    return np.where(np.exp(lifted) > cfg.highlight_knee, high, lifted)


def render_display_bracket(radiance: np.ndarray, cfg: DisplayConfig, rng: np.random.Generator) -> DisplayBracket:
    """Synthesise one display-referred bracket from a radiance map (H, W, 3) >= 0, linear Rec.709.

    The normal exposure (the reference) puts the scene's median at about 18 % grey; the other frames
    are ``ev_step`` apart around it (or all darker, as phones shoot). Each frame is the clipped
    scene at its exposure with read noise, through one camera tone curve, 8-bit, and JPEG-compressed
    for a share of brackets. The label tone-maps the clean scene at the reference exposure (base and
    detail, Durand & Dorsey 2002): highlights compressed from the darker frames, shadows lifted from
    the brighter ones, detail kept, through the same camera curve, and clamped between the darkest
    and the brightest clean frame so that a weighting of the frames can reach it.
    """
    crop, params = _crop_scene(radiance, SynthConfig(width=cfg.size, height=cfg.size, scale=cfg.scale), rng)
    k = cfg.frames
    step = float(rng.choice(cfg.ev_step))
    ref = 0 if rng.uniform() < cfg.phone_share else k // 2
    luminance = crop @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    exposure = 0.18 * 2.0 ** rng.uniform(*cfg.key) / max(float(np.median(luminance)), 1e-9)
    evs = [(ref - j) * step for j in range(k)]  # brightest first
    scene = crop * np.float32(exposure)  # reference units: 1 = where the reference frame clips
    curve_name = str(rng.choice(list(CAMERA_CURVES)))
    curve = CAMERA_CURVES[curve_name]
    quality = int(rng.integers(*cfg.jpeg_quality)) if rng.uniform() < cfg.jpeg_share else None
    noise = rng.uniform(*cfg.noise)
    frames, clean_display = [], []
    for ev in evs:
        linear = np.minimum(scene * np.float32(2.0**ev), 1.0)
        clean_display.append(curve(linear))
        noisy = np.clip(linear + rng.normal(0.0, noise, linear.shape).astype(np.float32), 0, 1)
        code = np.round(curve(noisy) * 255).astype(np.uint8)
        if quality is not None:
            ok, buf = cv2.imencode(".jpg", code[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            code = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        frames.append(np.moveaxis(srgb_to_linear(code.astype(np.float32) / 255), -1, 0))
    # the label: tone-mapped clean scene at the reference exposure
    lum = np.maximum(scene.max(axis=-1), 1e-6)
    log_m = np.log(lum).astype(np.float32)
    base = cv2.bilateralFilter(log_m, d=2 * cfg.detail_radius + 1, sigmaColor=0.7, sigmaSpace=cfg.detail_radius)
    target = _tone_map_base(base, cfg, lift_max=2.0 ** evs[0], e_max=2.0 ** -evs[-1])
    mapped = scene * np.exp(target - base)[..., None]
    label_display = curve(np.clip(mapped, 0, 1))
    lo, hi = np.minimum.reduce(clean_display), np.maximum.reduce(clean_display)
    label_display = np.clip(label_display, lo, hi)
    label = np.moveaxis(srgb_to_linear(label_display), -1, 0)
    true = np.array([2.0 ** (ev - evs[0]) for ev in evs])
    passed = true * 2.0 ** rng.uniform(-cfg.ratio_error_ev, cfg.ratio_error_ev, k)
    passed = np.minimum.accumulate(passed / passed[0])  # still 1 first, never increasing
    params.update(ev_step=step, reference=ref, curve=curve_name, jpeg=quality, noise=noise, exposure=exposure)
    return DisplayBracket(
        np.stack(frames).astype(np.float32), passed.astype(np.float32), label.astype(np.float32), ref, params
    )


def write_display_bracket(folder: Path, bracket: DisplayBracket, base_time: float = 1 / 60) -> None:
    """A display-referred bracket as a camera folder holds it: 8-bit PNG frames (the stored values),
    ``exposures.txt`` (the exposure times as metadata would give them, ratio error included), the
    label as a float32 TIFF (linear, as fusecli decodes the frames) and ``synth.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (frame, ratio) in enumerate(zip(bracket.frames, bracket.ratios)):
        code = np.round(linear_to_srgb(np.moveaxis(frame, 0, -1)) * 255).astype(np.uint8)
        name = f"frame_{k + 1}.png"
        cv2.imwrite(str(folder / name), code[..., ::-1])
        lines.append(f"{name} {base_time * float(ratio):.9g}")
    (folder / "exposures.txt").write_text("\n".join(lines) + "\n")
    write_label(folder / "label.tif", bracket.label)
    params = {**bracket.params, "reference": bracket.reference, "ratios": [float(r) for r in bracket.ratios]}
    (folder / "synth.json").write_text(json.dumps(params, indent=2, default=float) + "\n")
