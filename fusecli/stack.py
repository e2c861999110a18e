"""Opening a bracket found by :mod:`fusecli.discover`: decoding its frames in exposure order
(:mod:`fusecli.exposure`), registering them and replacing ghosts (:mod:`fusecli.align`,
:mod:`fusecli.deghost`), and opening the next stacks in background threads.

A :class:`Stack`'s frames are float32 ``(K, C, H, W)`` in [0, 1], brightest first, never multiplied
by their ratio; ``ratios[k] <= 1`` is the exposure of frame k relative to frame 0.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from fusecli import align
from fusecli import deghost as ghosts
from fusecli.choices import AlignMode, Transfer
from fusecli.discover import StackSource
from fusecli.errors import FuseError
from fusecli.exposure import (
    MAX_DISAGREEMENT_EV,
    SAME_EXPOSURE,
    RatioSource,
    absurd_exposures,
    disagreement,
    estimate_ratios,
    plan_exposures,
)
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FrameInfo, available_memory
from fusecli.io.icc import ColourSpace
from fusecli.io.raw import CameraInfo


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
    transfer: str  # "linear" (linear light: RAW, float TIFF) or "srgb" (through a tone curve: display-referred)
    camera: CameraInfo | None = None
    label_path: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    space: ColourSpace | None = None  # RGB and mono stacks: the colour space the frames are in, and the outputs
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
    the whole stack)."""
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        held, i = frames[start].copy(), start
        while order[i] != start:
            frames[i] = frames[order[i]]
            done[i], i = True, order[i]
        frames[i], done[i] = held, True


def _from_pixels(
    frames: np.ndarray, slots: Sequence[FrameInfo], ratios: Sequence[float] | None, name: str, notes: list[str]
) -> tuple[list[int], list[float], RatioSource]:
    """Order and ratios where the metadata cannot tell: frames reordered in place by brightness ->
    (order over the slots, ratios, their source), ``notes`` told how. ``ratios`` are the user's."""
    order = sorted(range(len(slots)), key=lambda k: -float(frames[k].mean()))
    _reorder(frames, order)
    if ratios is not None:
        notes.append("frames ordered by brightness (the metadata does not tell), ratios from --ratios")
        return order, list(ratios), "user"
    found, warnings = estimate_ratios(frames)
    notes.append("no exposure metadata: ratios estimated from the pixels (pass --ratios to set them)")
    notes += [f"warning: {w}" for w in warnings]
    if any(b >= a * (1 - SAME_EXPOSURE) for a, b in zip(found, found[1:])):
        raise FuseError(
            f"{slots[order[0]].path}: frames of stack {name} look equally exposed (estimated ratios "
            f"{', '.join(f'{r:.3g}' for r in found)})"
        )
    return order, found, "estimated"


def frame_buffer(shape: tuple[int, ...], pinned: bool) -> np.ndarray:
    """An uninitialised float32 array for a stack's frames; ``pinned``: in page-locked memory (torch's
    caching host allocator, reused from stack to stack), which a CUDA device copies from at the bus's
    speed (bench/bench_gpu.py measures it)."""
    if not pinned:
        return np.empty(shape, dtype=np.float32)
    import torch

    return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()


def load_stack(
    source: StackSource,
    ratios: Sequence[float] | None = None,
    transfer: Transfer = "auto",
    pinned: bool = False,
) -> Stack:
    """Decode a stack: frames (K, C, H, W) float32 [0, 1] brightest first, with exposure ratios
    (``pinned``: in page-locked memory, for a CUDA device)."""
    validate(source)
    infos = source.frames
    first = infos[0]
    spaces = [image_io.frame_space(i, transfer) for i in infos] if first.kind != "raw" else []
    if len({s.linear for s in spaces}) > 1:
        raise FuseError(
            f"{first.path}: frames of stack {source.name} mix linear light and tone-curved values "
            f"({', '.join(sorted({s.name for s in spaces}))})"
        )
    plan = plan_exposures(source, ratios)
    # With the order known from metadata, each frame is decoded straight into its final slot.
    decode_order = plan[0] if plan is not None else list(range(len(infos)))
    # the working space: the reference frame's where the order is known, else the first's
    space = spaces[decode_order[0]] if spaces else None
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
            image_io.read_frame(info, transfer, out=frames[slot], target=space)
    slots = [infos[k] for k in decode_order]  # the frame in each slot of ``frames``
    notes = list(source.notes) + [f"warning: {w}" for w in absurd_exposures(infos)]
    if len({s.name for s in spaces}) > 1:
        notes.append(f"frames in {', '.join(sorted({s.name for s in spaces}))}: converted into {space.name}")
    if (
        plan is not None
        and plan[2] in ("exif", "sidecar")
        and (off := disagreement(frames, plan[1])) > MAX_DISAGREEMENT_EV
    ):
        what = "EXIF" if plan[2] == "exif" else "listed"
        notes.append(
            f"warning: the {what} exposures disagree with the pixels by {off:.1f} EV: ratios estimated from them"
        )
        plan = None
    if plan is None:
        order, found, how = _from_pixels(frames, slots, ratios, source.name, notes)
    else:
        order, found, how = list(range(len(slots))), plan[1], plan[2]
    ordered = tuple(slots[k] for k in order)
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
        transfer="linear" if space is None or space.linear else "srgb",
        camera=cameras[infos.index(ordered[0])],
        label_path=source.label,
        notes=tuple(notes),
        space=space,
    )


# --- opening a stack: decode, align, deghost ------------------------------------------------------


@dataclass(frozen=True)
class StackOptions:
    """How a stack is opened (HDRMerge's LoadOptions): exposure ratios (None: from metadata or the
    pixels), transfer of non-RAW frames, registration mode, deghosting, and whether the frames go to
    page-locked memory (set by :func:`fusecli.fuse.fuse_sources` when it fuses on a CUDA device)."""

    ratios: tuple[float, ...] | None = None
    transfer: Transfer = "auto"
    align: AlignMode = "translation"
    deghost: bool = True
    pinned: bool = False


def open_stack(source: StackSource, options: StackOptions = StackOptions()) -> Stack:
    """Decode a stack, register its frames onto the reference and replace ghosts -> the Stack with
    ``motion`` set. Frames that cannot be registered stay as they are; their reason is in ``motion``."""
    return register(
        load_stack(source, options.ratios, options.transfer, options.pinned), options.align, options.deghost
    )


def register(stack: Stack, mode: AlignMode = "translation", deghost: bool = True) -> Stack:
    """Align a decoded stack's frames onto the reference and replace ghosts, in place -> the stack
    with ``motion`` set (each frame's motion and the share of its pixels that were ghosts)."""
    summaries: align.Summaries = {}  # each frame read once for both (a warped frame again)
    frames, motion = align.align_stack(stack.frames, stack.ratios, mode, summaries, stack.transfer == "srgb")
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
