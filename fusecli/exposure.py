"""Exposure order and ratios of a bracket: from its metadata (EXIF, an exposure list beside the
frames, the user's ``--ratios``) or, when nothing tells, estimated from the pixels.

Ratios are relative to the brightest frame: ``ratios[k] <= 1`` is the exposure of frame k over that
of frame 0 (docs/stacks.md, "Exposure ratios").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from fusecli.errors import FuseError, UsageError
from fusecli.io.common import FrameInfo

if TYPE_CHECKING:
    from fusecli.discover import StackSource

RatioSource = Literal["user", "exif", "sidecar", "estimated"]
SAME_EXPOSURE = 0.02  # exposures within 2 % of each other are "the same"
#: An EXIF exposure time longer than this (seconds) is a broken tag, not a camera's: the pixels decide.
MAX_EXPOSURE_S = 3600.0
#: Metadata whose ratios differ from the pixels' by more than this many stops is a broken tag (or
#: another camera's): the pixels decide, with a warning. A camera's tone curve alone stays well inside.
MAX_DISAGREEMENT_EV = 3.0


# --- sidecar exposure lists ---------------------------------------------------------------------


def _number(text: str) -> float:
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def parse_sidecar(path: Path) -> dict[str, float]:
    """Exposure times in seconds by file name from an exposure list.

    Lines are ``file seconds`` (``1/8`` or ``0.125``). A third column is accepted when it is the
    reciprocal of the second, as in Debevec's and the Taipei lists (``file seconds 1/seconds``). A
    header comment naming a ``1/shutter`` column first (``# file 1/shutter_speed``, as in Debevec's
    own list) means that column holds 1/seconds. Blank lines and ``#`` comments are skipped.
    """
    times: dict[str, float] = {}
    inverse_first = False
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise FuseError(f"{path}: cannot read the exposure list ({e})") from None
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("#"):
            header = text.lstrip("#").split()
            if len(header) >= 2 and header[1].startswith("1/"):
                inverse_first = True
            continue
        if not text:
            continue
        parts = text.split()
        try:
            values = [_number(v) for v in parts[1:3]]
        except (ValueError, ZeroDivisionError):
            raise FuseError(f"{path}:{n}: expected 'file seconds', got {text!r}") from None
        if not values or values[0] <= 0:
            raise FuseError(f"{path}:{n}: expected 'file seconds' with seconds > 0, got {text!r}")
        seconds = values[0]
        if len(values) == 2 and abs(values[0] * values[1] - 1) < 1e-3:
            seconds = values[0]  # "file seconds 1/seconds": the columns agree
        elif inverse_first:
            seconds = 1.0 / values[0]
        times[parts[0]] = seconds
    if not times:
        raise FuseError(f"{path}: the exposure list names no file")
    return times


def sidecar_time(times: dict[str, float], info: FrameInfo) -> float | None:
    return times.get(info.path.name, times.get(info.path.stem))


# --- exposure order and ratios ------------------------------------------------------------------


def _relative_exposures(infos: Sequence[FrameInfo]) -> list[float] | None:
    """time x ISO / N^2 of every frame (ISO and N only where every frame has them), or None where a
    time is missing or absurd."""
    if any(i.exposure_time is None or i.exposure_time > MAX_EXPOSURE_S for i in infos):
        return None
    iso = all(i.iso for i in infos)
    aperture = all(i.aperture for i in infos)
    return [i.exposure_time * (i.iso if iso else 1.0) / (i.aperture**2 if aperture else 1.0) for i in infos]


def _all_equal(exposures: Sequence[float]) -> bool:
    top = max(exposures)
    return all(e >= top * (1 - SAME_EXPOSURE) for e in exposures)


def _distinct(exposures: Sequence[float]) -> bool:
    ordered = sorted(exposures, reverse=True)
    return all(b < a * (1 - SAME_EXPOSURE) for a, b in zip(ordered, ordered[1:]))


def plan_exposures(
    source: StackSource, ratios: Sequence[float] | None = None
) -> tuple[list[int], list[float], RatioSource] | None:
    """Order (brightest first) and ratios of a stack from metadata alone; None when only the pixels can tell.

    Returns (order, ratios, source): ``order[j]`` is the index in ``source.frames`` of output frame j.
    Exposures come from EXIF/LibRaw (time x ISO / N^2), else the exposure list beside the frames.
    ``ratios`` (the user's) override them; the order then comes from the metadata where its
    exposures differ, else from the pixels. Frames of equal exposure are kept side by side; a stack
    whose frames all have one exposure is refused.
    """
    infos = source.frames
    exposures = _relative_exposures(infos)
    what = "exposure metadata"
    if exposures is None and source.sidecar is not None:
        times = parse_sidecar(source.sidecar)
        listed = [sidecar_time(times, i) for i in infos]
        missing = [i.name for i, t in zip(infos, listed) if t is None]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise FuseError(f"{source.sidecar}: no exposure time for {', '.join(missing[:3])}{more}")
        exposures, what = listed, f"exposure list {source.sidecar.name}"
    if ratios is not None:
        _check_user_ratios(ratios, source)
        if exposures is None or not _distinct(exposures):
            return None  # the order must come from the pixels
        order = sorted(range(len(infos)), key=lambda k: -exposures[k])
        return order, list(ratios), "user"
    if exposures is None:
        return None
    if _all_equal(exposures):
        raise FuseError(
            f"{infos[1].path}: same exposure as {infos[0].name} ({what}), as every frame of stack "
            f"{source.name}; a bracket needs different exposures (or pass --ratios)"
        )
    order = sorted(range(len(infos)), key=lambda k: -exposures[k])
    top = exposures[order[0]]
    return order, [exposures[k] / top for k in order], ("exif" if what == "exposure metadata" else "sidecar")


def _check_user_ratios(ratios: Sequence[float], source: StackSource) -> None:
    if len(ratios) != len(source.frames):
        raise UsageError(f"--ratios gives {len(ratios)} values but stack {source.name} has {len(source.frames)} frames")
    if (
        abs(ratios[0] - 1.0) > 1e-9
        or any(not (0 < r <= 1) for r in ratios)
        or any(b >= a for a, b in zip(ratios, ratios[1:]))
    ):
        raise UsageError(
            f"--ratios {','.join(f'{r:g}' for r in ratios)}: expected 1 first, then strictly decreasing "
            "values in (0, 1)"
        )


#: Bands of (noise floor, clip level, least samples) tried in turn to match neighbouring frames.
ESTIMATE_BANDS = ((0.02, 0.9, 1000), (0.004, 0.97, 200), (0.002, 0.985, 50))
ASSUMED_STEP = 0.25  # 2 EV: the most common bracket step, used when nothing else tells


def _pair_steps(frames: np.ndarray, samples: int, bands=ESTIMATE_BANDS, share: float = 0.0) -> list[float | None]:
    """For each pair of neighbours (brightest first), darker / brighter as the pixels show it, or
    None where no band of ``bands`` has enough samples (its count, and ``share`` of the samples);
    ``samples`` per frame at most."""
    k = frames.shape[0]
    step = max(1, int(math.sqrt(frames[0].size / samples)))
    sample = frames[:, :, ::step, ::step].reshape(k, -1)
    steps: list[float | None] = []
    for i in range(k - 1):
        bright, dark = sample[i], sample[i + 1]
        found = None
        for low, high, least in bands:
            ok = (bright < high) & (bright > low) & (dark > low)
            if int(ok.sum()) >= max(least, share * bright.size):
                found = float(np.median(dark[ok] / bright[ok]))
                break
        steps.append(found)
    return steps


def disagreement(frames: np.ndarray, ratios: Sequence[float], samples: int = 250_000) -> float:
    """How far ``ratios`` (from metadata) are from what the pixels show: the largest difference in
    stops between a pair of neighbours' step and the pixels' (pairs the pixels cannot measure left
    out; 0 when none can be). Only pairs with a twentieth of their pixels well exposed in both
    measure here (the first band of :data:`ESTIMATE_BANDS`): overruling metadata takes more than a
    nearly black frame's noise floor or a few lamps. frames (K, C, H, W) [0, 1] in the order of
    ``ratios``."""
    off = 0.0
    for i, step in enumerate(_pair_steps(frames, samples, ESTIMATE_BANDS[:1], share=0.05)):
        if step is not None and step > 0 and ratios[i] > 0 and ratios[i + 1] > 0:
            off = max(off, abs(math.log2((ratios[i + 1] / ratios[i]) / step)))
    return off


def absurd_exposures(infos: Sequence[FrameInfo]) -> list[str]:
    """Warnings for frames whose EXIF exposure time no camera takes (over :data:`MAX_EXPOSURE_S`):
    the tag is ignored and the pixels decide."""
    return [
        f"{i.name}: EXIF exposure time {i.exposure_time:g} s is absurd: ignored, ratios estimated from the pixels"
        for i in infos
        if i.exposure_time is not None and i.exposure_time > MAX_EXPOSURE_S
    ]


def estimate_ratios(frames: np.ndarray) -> tuple[list[float], list[str]]:
    """Exposure ratios of frames already ordered brightest first, from their pixels -> (K ratios,
    first 1; warnings).

    For each pair of neighbours, the median of darker / brighter over the samples unclipped in the
    brighter frame and above the noise floor in both, with the narrowest band of
    :data:`ESTIMATE_BANDS` that leaves enough samples; ratios are chained from the reference. A pair
    that no band matches (5-6 EV apart, few pixels well exposed in both) takes the geometric mean of
    the steps that were found, else :data:`ASSUMED_STEP`, with a warning. frames (K, C, H, W) [0, 1].
    """
    steps = _pair_steps(frames, 2_000_000)
    known = [s for s in steps if s is not None]
    warnings = []
    if len(known) < len(steps):
        fill = float(np.exp(np.mean(np.log(known)))) if known else ASSUMED_STEP
        pairs = ", ".join(f"{i + 1}-{i + 2}" for i, s in enumerate(steps) if s is None)
        warnings.append(
            f"frames {pairs} share too few well-exposed pixels to measure their ratio: assumed {fill:.3g} "
            f"({math.log2(1 / fill):.1f} EV) from the brightness order (pass --ratios to set it)"
        )
        steps = [fill if s is None else s for s in steps]
    ratios = [1.0]
    for s in steps:
        ratios.append(ratios[-1] * s)
    return ratios, warnings
