"""Bracket stacks: the stack types, exposure order and ratios, and opening (decoding, aligning,
deghosting) a stack found by :mod:`fusecli.discover`.

A :class:`Stack`'s frames are float32 ``(K, C, H, W)`` in [0, 1], brightest first, never multiplied
by their ratio; ``ratios[k] <= 1`` is the exposure of frame k relative to frame 0. Where the ratios
come from, and in what order, is in README.md ("Commands", ``inspect``).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from fusecli import align
from fusecli import deghost as ghosts
from fusecli.errors import FuseError
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FrameInfo, available_memory
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
    error: str | None = None  # why it cannot be opened (a file that could not be read), found at discovery

    @property
    def kind(self) -> str:
        if not self.frames:
            return "unknown"
        return "raw" if self.frames[0].kind == "raw" else ("mono" if self.frames[0].channels == 1 else "rgb")

    @property
    def frame_bytes(self) -> int:
        """Bytes its frames take decoded (float32; RAW as its packed planes): what opening it holds."""
        return sum(4 * f.channels * f.height * f.width for f in self.frames)


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
        listed = [_sidecar_time(times, i) for i in infos]
        missing = [i.name for i, t in zip(infos, listed) if t is None]
        if missing:
            raise FuseError(f"{source.sidecar}: no exposure time for {', '.join(missing)}")
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
        raise FuseError(f"--ratios gives {len(ratios)} values but stack {source.name} has {len(source.frames)} frames")
    if (
        abs(ratios[0] - 1.0) > 1e-9
        or any(not (0 < r <= 1) for r in ratios)
        or any(b >= a for a, b in zip(ratios, ratios[1:]))
    ):
        raise FuseError(
            f"--ratios {','.join(f'{r:g}' for r in ratios)}: expected 1 first, then strictly decreasing "
            "values in (0, 1)"
        )


#: Bands of (noise floor, clip level, least samples) tried in turn to match neighbouring frames.
ESTIMATE_BANDS = ((0.02, 0.9, 1000), (0.004, 0.97, 200), (0.002, 0.985, 50))
ASSUMED_STEP = 0.25  # 2 EV: the most common bracket step, used when nothing else tells


def estimate_ratios(frames: np.ndarray) -> tuple[list[float], list[str]]:
    """Exposure ratios of frames already ordered brightest first, from their pixels -> (K ratios,
    first 1; warnings).

    For each pair of neighbours, the median of darker / brighter over the samples unclipped in the
    brighter frame and above the noise floor in both, with the narrowest band of
    :data:`ESTIMATE_BANDS` that leaves enough samples; ratios are chained from the reference. A pair
    that no band matches (5-6 EV apart, few pixels well exposed in both) takes the geometric mean of
    the steps that were found, else :data:`ASSUMED_STEP`, with a warning. frames (K, C, H, W) [0, 1].
    """
    k = frames.shape[0]
    step = max(1, int(math.sqrt(frames[0].size / 2_000_000)))  # at most ~2 M samples per frame
    sample = frames[:, :, ::step, ::step].reshape(k, -1)
    steps: list[float | None] = []
    for i in range(k - 1):
        bright, dark = sample[i], sample[i + 1]
        found = None
        for low, high, least in ESTIMATE_BANDS:
            ok = (bright < high) & (bright > low) & (dark > low)
            if int(ok.sum()) >= least:
                found = float(np.median(dark[ok] / bright[ok]))
                break
        steps.append(found)
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


# --- validation and loading ---------------------------------------------------------------------


def validate(source: StackSource) -> None:
    """Checks that need no pixels: at least two frames, one camera, one size, one kind of file."""
    frames = source.frames
    if source.error is not None:
        raise FuseError(source.error)
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
    need = 2 * source.frame_bytes  # frames + working copies
    available = available_memory()
    if available is not None and need > available:
        raise FuseError(
            f"{first.path}: stack {source.name} ({len(frames)} frames of {first.width}x{first.height}x"
            f"{first.channels}) needs about {need / 2**30:.1f} GiB; {available / 2**30:.1f} GiB is available"
        )


def _reorder(frames: np.ndarray, order: Sequence[int]) -> None:
    """frames[i] = frames[order[i]] for every i, in place, one frame's copy at a time (not a copy of
    the whole stack: 432 MB for three 12 MP RGB frames)."""
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        held, i = frames[start].copy(), start
        while order[i] != start:
            frames[i] = frames[order[i]]
            done[i], i = True, order[i]
        frames[i], done[i] = held, True


def frame_buffer(shape: tuple[int, ...], pinned: bool) -> np.ndarray:
    """An uninitialised float32 array for a stack's frames; ``pinned``: in page-locked memory (torch's
    caching host allocator, reused from stack to stack), which a CUDA device copies from at the bus's
    speed: three 24 MP RGB frames in 16 ms rather than 124 ms (bench/bench_gpu.py, H200)."""
    if not pinned:
        return np.empty(shape, dtype=np.float32)
    import torch

    return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()


def load_stack(
    source: StackSource,
    ratios: Sequence[float] | None = None,
    transfer: image_io.Transfer = "auto",
    pinned: bool = False,
) -> Stack:
    """Decode a stack: frames (K, C, H, W) float32 [0, 1] brightest first, with exposure ratios
    (``pinned``: in page-locked memory, for a CUDA device)."""
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
    frames = frame_buffer((len(infos), first.channels, first.height, first.width), pinned)
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
            image_io.read_frame(info, transfer, out=frames[slot])
    notes = list(source.notes)
    if plan is None:
        order = sorted(range(len(infos)), key=lambda k: -float(frames[k].mean()))
        _reorder(frames, order)
        if ratios is not None:
            found, how = list(ratios), "user"
            notes.append("frames ordered by brightness (the metadata does not tell), ratios from --ratios")
        else:
            found, warnings = estimate_ratios(frames)
            how = "estimated"
            notes.append("no exposure metadata: ratios estimated from the pixels (pass --ratios to set them)")
            notes += [f"warning: {w}" for w in warnings]
            if any(b >= a * (1 - SAME_EXPOSURE) for a, b in zip(found, found[1:])):
                raise FuseError(
                    f"{infos[order[0]].path}: frames of stack {source.name} look equally exposed (estimated ratios "
                    f"{', '.join(f'{r:.3g}' for r in found)})"
                )
    else:
        order, found, how = plan
    ordered = tuple(infos[k] for k in order)
    for j in range(1, len(found)):
        if found[j] >= found[j - 1] * (1 - SAME_EXPOSURE):
            notes.append(f"{ordered[j].name} has the exposure of {ordered[j - 1].name}: both are fused")
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


def describe(source: StackSource, options: StackOptions | None = None, decode: bool = False) -> dict:
    """A JSON-ready description of a stack and every decision taken about it (``inspect``).

    Pixels are decoded only when the exposure ratios must be estimated from them, when
    ``options.align`` asks for each frame's motion (then under ``"motion"``), or with ``decode``:
    every frame is decoded and a FuseError names the broken ones.
    """
    options = options or StackOptions(align="none")
    broken = decode_errors(source, options.transfer) if decode else []
    if broken:
        raise FuseError("; ".join(broken))
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


def decode_errors(source: StackSource, transfer: image_io.Transfer = "auto") -> list[str]:
    """Decode every frame of a stack, one at a time -> why each broken one fails (empty: all decode).
    What ``inspect --decode`` reports: a header can look fine while the data behind it is not."""
    errors = []
    for info in source.frames:
        try:
            if info.kind == "raw":
                raw_io.read_raw(info.path)
            else:
                image_io.read_frame(info, transfer)
        except FuseError as e:
            errors.append(str(e))
    return errors


# --- opening a stack: decode, align, deghost ------------------------------------------------------


@dataclass(frozen=True)
class StackOptions:
    """How a stack is opened (HDRMerge's LoadOptions): exposure ratios (None: from metadata or the
    pixels), transfer of non-RAW frames, registration mode, deghosting, and whether the frames go to
    page-locked memory (set by :func:`fusecli.fuse.fuse_sources` when it fuses on a CUDA device)."""

    ratios: tuple[float, ...] | None = None
    transfer: image_io.Transfer = "auto"
    align: align.Mode = "translation"
    deghost: bool = True
    pinned: bool = False


def open_stack(source: StackSource, options: StackOptions = StackOptions()) -> Stack:
    """Decode a stack, register its frames onto the reference and replace ghosts -> the Stack with
    ``motion`` set. Frames that cannot be registered stay as they are; their reason is in ``motion``."""
    return register(
        load_stack(source, options.ratios, options.transfer, options.pinned), options.align, options.deghost
    )


def register(stack: Stack, mode: align.Mode = "translation", deghost: bool = True) -> Stack:
    """Align a decoded stack's frames onto the reference and replace ghosts, in place -> the stack
    with ``motion`` set (each frame's motion and the share of its pixels that were ghosts)."""
    summaries: align.Summaries = {}  # each frame read once for both (a warped frame again)
    frames, motion = align.align_stack(stack.frames, stack.ratios, mode, summaries)
    notes = stack.notes
    if len(motion) > 1 and all(m.reason == align.STILL_REASON for m in motion[1:]):
        notes = (*notes, f"tripod: no frame moved over {align.STILL:g} px at half the registration size; none warped")
    if deghost:
        shares = ghosts.deghost(frames, stack.ratios, stack.transfer == "srgb", summaries)
        for m, share in zip(motion, shares):
            m.ghost_share = share
    return dataclasses.replace(stack, frames=frames, motion=tuple(motion), notes=notes)


def prefetch(
    sources: Iterable[StackSource], open_one: Callable[[StackSource], object], ahead: int = 1
) -> Iterator[tuple[StackSource, object, FuseError | None]]:
    """Yield (source, open_one(source), None), or (source, None, error) when opening failed with a
    FuseError, in order, with the next ``ahead`` sources opened in background threads (one each)
    while the caller works on this one."""
    sources = list(sources)
    ahead = max(1, ahead)
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = deque(pool.submit(open_one, s) for s in sources[:ahead])
        for i, source in enumerate(sources):
            try:
                opened, error = pending.popleft().result(), None
            except FuseError as e:
                opened, error = None, e
            if i + ahead < len(sources):
                pending.append(pool.submit(open_one, sources[i + ahead]))
            yield source, opened, error
