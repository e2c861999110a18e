"""Bracket stacks: the stack types, exposure order and ratios, and opening (decoding, aligning,
deghosting) a stack found by :mod:`fusecli.discover`.

A :class:`Stack`'s frames are float32 ``(K, C, H, W)`` in [0, 1], brightest first, never multiplied
by their ratio; ``ratios[k] <= 1`` is the exposure of frame k relative to frame 0. Where the ratios
come from, and in what order, is in README.md ("Commands", ``inspect``).
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from fusecli import align
from fusecli.errors import FuseError
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FrameInfo
from fusecli.io.raw import CameraInfo

RatioSource = Literal["user", "exif", "sidecar", "estimated"]
SAME_EXPOSURE = 0.02  # exposures within 2 % of each other are "the same"


@dataclass(frozen=True)
class StackSource:
    """A bracket found on disk, before decoding: its frames in capture order and what came with them."""

    name: str
    frames: tuple[FrameInfo, ...]
    label: Path | None = None
    sidecar: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "raw" if self.frames[0].kind == "raw" else ("mono" if self.frames[0].channels == 1 else "rgb")


@dataclass
class Stack:
    """A decoded bracket. frames: (K, C, H, W) float32 in [0, 1], brightest first, not scaled by
    exposure; ratios[k] = exposure of frame k / exposure of frame 0 (so ratios[0] == 1)."""

    name: str
    frames: np.ndarray
    infos: tuple[FrameInfo, ...]
    ratios: tuple[float, ...]
    ratio_source: RatioSource
    kind: str  # "raw" (C = 4: R, G1, G2, B planes), "rgb" or "mono"
    transfer: str  # transfer the frames were decoded from: "linear" or "srgb"
    camera: CameraInfo | None = None
    label_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    motion: tuple[align.FrameMotion, ...] = ()  # per frame, once aligned (open_stack)

    def read_label(self) -> np.ndarray:
        """The stack's label as (C, H, W) float32, linear, [0, 1]; checked against the frames."""
        if self.label_path is None:
            raise FuseError(f"{self.name}: the stack has no label (label.* beside its frames)")
        label = image_io.read_label(self.label_path, transfer="linear" if self.transfer == "linear" else "auto")
        expected = self.frames.shape[1:]
        if label.shape != expected:
            raise FuseError(
                f"{self.label_path}: label of shape (C, H, W) = {label.shape} does not match the frames' "
                f"{tuple(expected)}"
            )
        return label


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


def _sidecar_time(times: dict[str, float], info: FrameInfo) -> float | None:
    return times.get(info.path.name, times.get(info.path.stem))


# --- exposure order and ratios ------------------------------------------------------------------


def _relative_exposures(infos: Sequence[FrameInfo]) -> list[float] | None:
    """time x ISO / N^2 of every frame (ISO and N only where every frame has them), or None."""
    if any(i.exposure_time is None for i in infos):
        return None
    iso = all(i.iso for i in infos)
    aperture = all(i.aperture for i in infos)
    return [i.exposure_time * (i.iso if iso else 1.0) / (i.aperture**2 if aperture else 1.0) for i in infos]


def _check_distinct(name: str, infos: Sequence[FrameInfo], exposures: Sequence[float], what: str) -> None:
    order = sorted(range(len(exposures)), key=lambda k: -exposures[k])
    for a, b in zip(order, order[1:]):
        if exposures[b] >= exposures[a] * (1 - SAME_EXPOSURE):
            raise FuseError(
                f"{infos[b].path}: same exposure as {infos[a].name} ({what}); a bracket needs a different "
                "exposure per frame"
            )


def plan_exposures(
    source: StackSource, ratios: Sequence[float] | None = None
) -> tuple[list[int], list[float], RatioSource] | None:
    """Order (brightest first) and ratios of a stack from metadata alone; None when only the pixels can tell.

    Returns (order, ratios, source): ``order[j]`` is the index in ``source.frames`` of output frame j.
    """
    infos = source.frames
    exposures = _relative_exposures(infos)
    what = "exposure metadata"
    if exposures is None and source.sidecar is not None:
        times = parse_sidecar(source.sidecar)
        listed = [_sidecar_time(times, i) for i in infos]
        missing = [i.name for i, t in zip(infos, listed) if t is None]
        if missing:
            raise FuseError(f"{source.sidecar}: no exposure time for {', '.join(missing)}")
        exposures, what = listed, "exposure list"
    if ratios is not None:
        if len(ratios) != len(infos):
            raise FuseError(f"--ratios gives {len(ratios)} values but stack {source.name} has {len(infos)} frames")
        if (
            abs(ratios[0] - 1.0) > 1e-9
            or any(not (0 < r <= 1) for r in ratios)
            or any(b >= a for a, b in zip(ratios, ratios[1:]))
        ):
            raise FuseError(
                f"--ratios {','.join(f'{r:g}' for r in ratios)}: expected 1 first, then strictly decreasing "
                "values in (0, 1)"
            )
        if exposures is None:
            return None  # the order must come from the pixels
        _check_distinct(source.name, infos, exposures, what)
        order = sorted(range(len(infos)), key=lambda k: -exposures[k])
        return order, list(ratios), "user"
    if exposures is None:
        return None
    _check_distinct(source.name, infos, exposures, what)
    order = sorted(range(len(infos)), key=lambda k: -exposures[k])
    top = exposures[order[0]]
    return order, [exposures[k] / top for k in order], ("exif" if what == "exposure metadata" else "sidecar")


def estimate_ratios(frames: np.ndarray, low: float = 0.02, high: float = 0.9, min_pixels: int = 1000) -> list[float]:
    """Exposure ratios of frames already ordered brightest first, from their pixels.

    For each pair of neighbours, the median of darker / brighter over the samples that are
    unclipped in the brighter frame (< ``high``) and above the noise floor in both (> ``low``);
    ratios are chained from the reference. frames: (K, C, H, W) in [0, 1] -> K ratios, first 1.
    Raises ValueError when a pair has fewer than ``min_pixels`` usable samples.
    """
    k = frames.shape[0]
    step = max(1, int(math.sqrt(frames[0].size / 2_000_000)))  # at most ~2 M samples per frame
    sample = frames[:, :, ::step, ::step].reshape(k, -1)
    ratios = [1.0]
    for i in range(k - 1):
        bright, dark = sample[i], sample[i + 1]
        ok = (bright < high) & (bright > low) & (dark > low)
        if int(ok.sum()) < min_pixels:
            raise ValueError(f"frames {i} and {i + 1}: only {int(ok.sum())} pixels are well exposed in both")
        ratios.append(ratios[-1] * float(np.median(dark[ok] / bright[ok])))
    return ratios


# --- validation and loading ---------------------------------------------------------------------


def validate(source: StackSource) -> None:
    """Checks that need no pixels: at least two frames, one camera, one size, one kind of file."""
    frames = source.frames
    if len(frames) < 2:
        raise FuseError(f"{frames[0].path}: stack {source.name} has only 1 frame; a bracket needs at least 2 exposures")
    first = frames[0]
    for f in frames[1:]:
        if (f.width, f.height) != (first.width, first.height):
            raise FuseError(
                f"{f.path}: size {f.width}x{f.height} differs from {first.name}'s "
                f"{first.width}x{first.height} in stack {source.name}"
            )
        if f.camera != first.camera:
            raise FuseError(
                f"{f.path}: camera {f.camera or 'unknown'} differs from {first.name}'s "
                f"{first.camera or 'unknown'} in stack {source.name}"
            )
        if (f.kind == "raw") != (first.kind == "raw") or f.channels != first.channels:
            raise FuseError(
                f"{f.path}: a {f.kind} frame with {f.channels} channel(s) among {first.kind} frames with "
                f"{first.channels} in stack {source.name}"
            )


def load_stack(
    source: StackSource, ratios: Sequence[float] | None = None, transfer: image_io.Transfer = "auto"
) -> Stack:
    """Decode a stack: frames (K, C, H, W) float32 [0, 1] brightest first, with exposure ratios."""
    validate(source)
    infos = source.frames
    first = infos[0]
    transfers = {image_io.resolve_transfer(i, transfer) for i in infos} if first.kind != "raw" else {"linear"}
    if len(transfers) > 1:
        raise FuseError(
            f"{first.path}: frames of stack {source.name} mix bit depths (and so transfers: "
            f"{', '.join(sorted(transfers))})"
        )
    plan = plan_exposures(source, ratios)
    # With the order known from metadata, each frame is decoded straight into its final slot.
    decode_order = plan[0] if plan is not None else list(range(len(infos)))
    frames = np.empty((len(infos), first.channels, first.height, first.width), dtype=np.float32)
    cameras: list[CameraInfo | None] = [None] * len(infos)
    for slot, k in enumerate(decode_order):
        info = infos[k]
        if info.kind == "raw":
            _, _, cameras[k] = raw_io.read_raw(info.path, out=frames[slot])
            ref = next(c for c in cameras if c is not None)
            if (cameras[k].cfa, cameras[k].black_level, cameras[k].white_level) != (
                ref.cfa,
                ref.black_level,
                ref.white_level,
            ):
                raise FuseError(
                    f"{info.path}: sensor layout (CFA, black/white level) differs from the other frames of "
                    f"stack {source.name}"
                )
        else:
            planes = image_io.read_frame(info, transfer)
            if planes.shape != frames.shape[1:]:
                raise FuseError(
                    f"{info.path}: decoded shape {planes.shape} differs from the stack's {frames.shape[1:]}"
                )
            frames[slot] = planes
    notes = list(source.notes)
    if plan is None:
        order = sorted(range(len(infos)), key=lambda k: -float(frames[k].mean()))
        frames = frames[order]
        if ratios is not None:
            found, how = list(ratios), "user"
            notes.append("no exposure metadata: frames ordered by brightness, ratios from --ratios")
        else:
            try:
                found = estimate_ratios(frames)
            except ValueError as e:
                raise FuseError(
                    f"{infos[order[0]].path}: no exposure metadata and the ratios cannot be estimated from "
                    f"the pixels ({e}); pass --ratios"
                ) from None
            how = "estimated"
            notes.append("no exposure metadata: ratios estimated from the pixels (pass --ratios to set them)")
            for a, b in zip(found, found[1:]):
                if b >= a * (1 - SAME_EXPOSURE):
                    raise FuseError(
                        f"{infos[order[0]].path}: frames of stack {source.name} look equally exposed "
                        f"(estimated ratios {', '.join(f'{r:.3g}' for r in found)})"
                    )
    else:
        order, found, how = plan
    ordered = tuple(infos[k] for k in order)
    return Stack(
        name=source.name,
        frames=np.ascontiguousarray(frames),
        infos=ordered,
        ratios=tuple(float(r) for r in found),
        ratio_source=how,
        kind=source.kind,
        transfer=transfers.pop(),
        camera=cameras[order[0]],
        label_path=source.label,
        notes=tuple(notes),
    )


# --- description (what `fusecli inspect` shows) ---------------------------------------------------


def describe(source: StackSource, options: StackOptions | None = None) -> dict:
    """A JSON-ready description of a stack and every decision taken about it (``inspect``).

    Pixels are decoded only when the exposure ratios must be estimated from them, or when
    ``options.align`` asks for each frame's motion (then under ``"motion"``).
    """
    options = options or StackOptions(align="none")
    ratios, transfer = options.ratios, options.transfer
    validate(source)
    plan = plan_exposures(source, ratios)
    notes = list(source.notes)
    if plan is None:
        stack = load_stack(source, ratios, transfer)
        infos, found, how, notes, camera = (
            stack.infos,
            stack.ratios,
            stack.ratio_source,
            list(stack.notes),
            stack.camera,
        )
        stack_transfer = stack.transfer
    else:
        order, found, how = plan
        infos = tuple(source.frames[k] for k in order)
        if how in ("sidecar", "user") and source.sidecar is not None and infos[0].exposure_time is None:
            times = parse_sidecar(source.sidecar)  # show the list's times where EXIF has none
            infos = tuple(dataclasses.replace(i, exposure_time=_sidecar_time(times, i)) for i in infos)
        camera = raw_io.read_camera(infos[0].path) if source.kind == "raw" else None  # one decode: CFA and levels
        stack_transfer = "linear" if source.kind == "raw" else image_io.resolve_transfer(infos[0], transfer)
    first = infos[0]
    row = {
        "name": source.name,
        "kind": source.kind,
        "frames": [
            {
                "path": str(i.path),
                "page": i.page,
                "exposure_time": i.exposure_time,
                "iso": i.iso,
                "aperture": i.aperture,
                "timestamp": i.timestamp.isoformat() if i.timestamp else None,
                "ratio": r,
            }
            for i, r in zip(infos, found)
        ],
        "ratios": list(found),
        "ratio_source": how,
        "width": first.width,
        "height": first.height,
        "channels": first.channels,
        "camera": first.camera,
        "cfa": camera.cfa if camera else None,
        "black_level": list(camera.black_level) if camera else None,
        "white_level": camera.white_level if camera else None,
        "transfer": stack_transfer,
        "label": str(source.label) if source.label else None,
        "notes": notes,
    }
    if options.align != "none":
        row["motion"] = [m.to_dict() for m in open_stack(source, dataclasses.replace(options, deghost=False)).motion]
    return row


# --- opening a stack: decode, align, deghost ------------------------------------------------------


@dataclass(frozen=True)
class StackOptions:
    """How a stack is opened (HDRMerge's LoadOptions): exposure ratios (None: from metadata or the
    pixels), transfer of non-RAW frames, registration mode, and deghosting."""

    ratios: tuple[float, ...] | None = None
    transfer: image_io.Transfer = "auto"
    align: align.Mode = "translation"
    deghost: bool = True


def open_stack(source: StackSource, options: StackOptions = StackOptions()) -> Stack:
    """Decode a stack, register its frames onto the reference and replace ghosts -> the Stack with
    ``motion`` set. Frames that cannot be registered stay as they are; their reason is in ``motion``."""
    return register(load_stack(source, options.ratios, options.transfer), options.align, options.deghost)


def register(stack: Stack, mode: align.Mode = "translation", deghost: bool = True) -> Stack:
    """Align a decoded stack's frames onto the reference and replace ghosts, in place -> the stack
    with ``motion`` set (each frame's motion and the share of its pixels that were ghosts)."""
    frames, motion = align.align_stack(stack.frames, stack.ratios, mode)
    if deghost:
        for m, share in zip(motion, align.deghost(frames, stack.ratios)):
            m.ghost_share = share
    return dataclasses.replace(stack, frames=frames, motion=tuple(motion))


def prefetch(
    sources: Iterable[StackSource], open_one: Callable[[StackSource], object]
) -> Iterator[tuple[StackSource, object, FuseError | None]]:
    """Yield (source, open_one(source), None), or (source, None, error) when opening failed with a
    FuseError, opening the next source in a background thread while the caller works on this one."""
    sources = list(sources)
    if not sources:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(open_one, sources[0])
        for i, source in enumerate(sources):
            try:
                opened, error = pending.result(), None
            except FuseError as e:
                opened, error = None, e
            if i + 1 < len(sources):
                pending = pool.submit(open_one, sources[i + 1])
            yield source, opened, error
