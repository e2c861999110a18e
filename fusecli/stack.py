"""Bracket stacks: the stack type, discovery of stacks on disk, grouping, and exposure ratios.

Discovery (:func:`discover`) reads headers only and returns :class:`StackSource` objects; decoding
(:func:`load_stack`) turns one into a :class:`Stack` whose frames are a float32 array
``(K, C, H, W)`` in [0, 1], brightest (the 1/1 reference) first, with ``ratios[k] <= 1`` the exposure
of frame k relative to frame 0. Frames are never multiplied by their ratio.

Where the ratios come from, in this order: ``--ratios`` given by the user ("user"); the exposure
metadata of every frame ("exif": time x ISO / f-number^2, from EXIF or LibRaw); an exposure list
beside the frames ("sidecar", see :func:`parse_sidecar`); else an estimate from the pixels
("estimated", see :func:`estimate_ratios`), and the stack's notes say so.

Grouping a folder: a folder with a label or an exposure list is one stack. Otherwise its frames, in
capture order, are split into brackets where the camera or the frame size changes, where more than
``GAP_SECONDS`` pass between one frame's end and the next one's start, or where an exposure repeats
(AEB sequences such as 0, -2, +2, 0, -2, +2 EV). ``group_size`` splits into fixed-size brackets
instead. A folder whose subfolders hold frames is a folder of stacks.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from fusecli.errors import FuseError
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FRAME_EXTENSIONS, LABEL_EXTENSIONS, RAW_EXTENSIONS, FrameInfo
from fusecli.io.raw import CameraInfo

RatioSource = Literal["user", "exif", "sidecar", "estimated"]
SIDECAR_NAMES = ("exposures.txt", "image_list.txt")
GAP_SECONDS = 2.0
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
    motion: tuple = ()  # per frame, fusecli.align.FrameMotion, once aligned

    def read_label(self) -> np.ndarray:
        """The stack's label as (C, H, W) float32, linear, [0, 1]; checked against the frames."""
        if self.label_path is None:
            raise FuseError(f"{self.name}: the stack has no label (label.* beside its frames)")
        label = image_io.read_label(self.label_path, transfer="linear" if self.transfer == "linear" else "auto")
        expected = self.frames.shape[1:]
        if label.shape != expected:
            raise FuseError(
                f"{self.label_path}: label of shape (C, H, W) = {label.shape} does not match the frames' {tuple(expected)}"
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
                f"{infos[b].path}: same exposure as {infos[a].name} ({what}); a bracket needs a different exposure per frame"
            )


def plan_exposures(source: StackSource, ratios: Sequence[float] | None = None) -> tuple[list[int], list[float], RatioSource] | None:
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
        if abs(ratios[0] - 1.0) > 1e-9 or any(not (0 < r <= 1) for r in ratios) or any(b >= a for a, b in zip(ratios, ratios[1:])):
            raise FuseError(f"--ratios {','.join(f'{r:g}' for r in ratios)}: expected 1 first, then strictly decreasing values in (0, 1)")
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


# --- discovery ----------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _probe(path: Path) -> list[FrameInfo]:
    if path.suffix.lower() in RAW_EXTENSIONS:
        return [raw_io.probe_raw(path)]
    return image_io.probe(path)


def _is_frame_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in FRAME_EXTENSIONS
        and path.stem.lower() != "label"
    )


def _drop_raw_duplicates(files: list[Path]) -> tuple[list[Path], list[str]]:
    """Cameras shooting RAW+JPEG write IMG_1.CR2 and IMG_1.JPG: keep the RAW only."""
    raw_stems = {f.stem for f in files if f.suffix.lower() in RAW_EXTENSIONS}
    kept = [f for f in files if f.suffix.lower() in RAW_EXTENSIONS or f.stem not in raw_stems]
    dropped = len(files) - len(kept)
    return kept, ([f"ignored {dropped} non-RAW file(s) that duplicate a RAW of the same name"] if dropped else [])


def _capture_order(items: list[FrameInfo]) -> list[FrameInfo]:
    if all(i.timestamp is not None for i in items):
        return sorted(items, key=lambda i: (i.timestamp, _natural_key(i.path), i.page or 0))
    return sorted(items, key=lambda i: (_natural_key(i.path), i.page or 0))


def _split_brackets(items: list[FrameInfo]) -> list[list[FrameInfo]]:
    groups: list[list[FrameInfo]] = []
    for info in items:
        if groups:
            current = groups[-1]
            first, previous = current[0], current[-1]
            same_kind = (info.camera, info.width, info.height, info.channels) == (first.camera, first.width, first.height, first.channels)
            gap = (
                info.timestamp is not None
                and previous.timestamp is not None
                and (info.timestamp - previous.timestamp).total_seconds() > (previous.exposure_time or 0.0) + GAP_SECONDS
            )
            repeated = info.exposure_time is not None and any(
                f.exposure_time is not None and abs(f.exposure_time - info.exposure_time) <= SAME_EXPOSURE * info.exposure_time
                for f in current
            )
            if same_kind and not gap and not repeated:
                current.append(info)
                continue
        groups.append([info])
    return groups


def _make_source(name: str, items: list[FrameInfo], label=None, sidecar=None, notes=()) -> StackSource:
    return StackSource(name=name, frames=tuple(items), label=label, sidecar=sidecar, notes=tuple(notes))


def _group(items: list[FrameInfo], folder_name: str, label: Path | None, sidecar: Path | None, group_size: int | None, notes: list[str]) -> list[StackSource]:
    items = _capture_order(items)
    if label is not None or sidecar is not None:
        why = "a label" if label is not None else "an exposure list"
        return [_make_source(folder_name, items, label, sidecar, notes + [f"one stack: the folder has {why}"])]
    if group_size is not None:
        if len(items) % group_size:
            raise FuseError(f"{items[0].path.parent}: {len(items)} frames do not split into brackets of --group-size {group_size}")
        groups = [items[i : i + group_size] for i in range(0, len(items), group_size)]
        how = f"split into brackets of {group_size} (--group-size)"
    else:
        groups = _split_brackets(items)
        has_time = all(i.timestamp is not None for i in items)
        how = "grouped by capture time, camera, size and exposure" if has_time else "grouped by camera, size and exposure (no capture times)"
    if len(groups) == 1:
        return [_make_source(folder_name, groups[0], notes=notes)]
    return [_make_source(g[0].path.stem if g[0].page is None else f"{g[0].path.stem}_{g[0].page}", g, notes=notes + [how]) for g in groups]


def _discover_folder(folder: Path, group_size: int | None) -> list[StackSource]:
    entries = sorted(folder.iterdir(), key=_natural_key)
    files, notes = _drop_raw_duplicates([p for p in entries if _is_frame_file(p)])
    stacks: list[StackSource] = []
    if files:
        labels = [p for p in entries if p.is_file() and p.stem.lower() == "label" and p.suffix.lower() in LABEL_EXTENSIONS]
        if len(labels) > 1:
            raise FuseError(f"{folder}: more than one label ({', '.join(p.name for p in labels)})")
        sidecars = [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()] + sorted(folder.glob("*_image_list.txt"))
        items = [item for f in files for item in _probe(f)]
        multipage = [f for f in files if f.suffix.lower() in {".tif", ".tiff"} and sum(1 for i in items if i.path == f) > 1]
        for f in multipage:  # a multi-page TIFF is a stack of its own
            stacks.append(_make_source(f.stem, [i for i in items if i.path == f], notes=["one multi-page TIFF"]))
        single = [i for i in items if i.path not in multipage]
        if single:
            stacks += _group(single, folder.name, labels[0] if labels else None, sidecars[0] if sidecars else None, group_size, notes)
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            stacks += _discover_folder(sub, group_size)
    return stacks


def discover(paths: Sequence[Path], group_size: int | None = None) -> list[StackSource]:
    """Find the bracket stacks in folders and files (headers only; nothing is decoded)."""
    if group_size is not None and group_size < 2:
        raise FuseError(f"--group-size {group_size}: a bracket needs at least 2 frames")
    stacks: list[StackSource] = []
    loose: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FuseError(f"{path}: no such file or folder")
        if path.is_dir():
            found = _discover_folder(path, group_size)
            if not found:
                raise FuseError(f"{path}: no RAW, TIFF, PNG or JPEG frames in this folder or its subfolders")
            stacks += found
        elif path.suffix.lower() not in FRAME_EXTENSIONS:
            raise FuseError(f"{path}: not a supported image type (expected RAW, TIFF, PNG or JPEG)")
        else:
            loose.append(path)
    if loose:
        files, notes = _drop_raw_duplicates(loose)
        items = [item for f in files for item in _probe(f)]
        if len(files) == 1 and len(items) > 1:
            stacks.append(_make_source(files[0].stem, items, notes=["one multi-page TIFF"]))
        else:
            stacks += _group(items, items[0].path.stem, None, None, group_size, notes)
    names: dict[str, int] = {}
    unique = []
    for s in stacks:  # stack names become output names: keep them unique
        n = names.get(s.name, 0)
        names[s.name] = n + 1
        unique.append(s if n == 0 else dataclasses.replace(s, name=f"{s.name}_{n + 1}"))
    return unique


# --- validation and loading ---------------------------------------------------------------------


def validate(source: StackSource) -> None:
    """Checks that need no pixels: at least two frames, one camera, one size, one kind of file."""
    frames = source.frames
    if len(frames) < 2:
        raise FuseError(f"{frames[0].path}: stack {source.name} has only 1 frame; a bracket needs at least 2 exposures")
    first = frames[0]
    for f in frames[1:]:
        if (f.width, f.height) != (first.width, first.height):
            raise FuseError(f"{f.path}: size {f.width}x{f.height} differs from {first.name}'s {first.width}x{first.height} in stack {source.name}")
        if f.camera != first.camera:
            raise FuseError(f"{f.path}: camera {f.camera or 'unknown'} differs from {first.name}'s {first.camera or 'unknown'} in stack {source.name}")
        if (f.kind == "raw") != (first.kind == "raw") or f.channels != first.channels:
            raise FuseError(f"{f.path}: a {f.kind} frame with {f.channels} channel(s) among {first.kind} frames with {first.channels} in stack {source.name}")


def load_stack(source: StackSource, ratios: Sequence[float] | None = None, transfer: image_io.Transfer = "auto") -> Stack:
    """Decode a stack: frames (K, C, H, W) float32 [0, 1] brightest first, with exposure ratios."""
    validate(source)
    infos = source.frames
    first = infos[0]
    transfers = {image_io.resolve_transfer(i, transfer) for i in infos} if first.kind != "raw" else {"linear"}
    if len(transfers) > 1:
        raise FuseError(f"{first.path}: frames of stack {source.name} mix bit depths (and so transfers: {', '.join(sorted(transfers))})")
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
            if (cameras[k].cfa, cameras[k].black_level, cameras[k].white_level) != (ref.cfa, ref.black_level, ref.white_level):
                raise FuseError(f"{info.path}: sensor layout (CFA, black/white level) differs from the other frames of stack {source.name}")
        else:
            planes = image_io.read_frame(info, transfer)
            if planes.shape != frames.shape[1:]:
                raise FuseError(f"{info.path}: decoded shape {planes.shape} differs from the stack's {frames.shape[1:]}")
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
                raise FuseError(f"{infos[order[0]].path}: no exposure metadata and the ratios cannot be estimated from the pixels ({e}); pass --ratios") from None
            how = "estimated"
            notes.append("no exposure metadata: ratios estimated from the pixels (pass --ratios to set them)")
            for a, b in zip(found, found[1:]):
                if b >= a * (1 - SAME_EXPOSURE):
                    raise FuseError(f"{infos[order[0]].path}: frames of stack {source.name} look equally exposed (estimated ratios {', '.join(f'{r:.3g}' for r in found)})")
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


def describe(source: StackSource, ratios: Sequence[float] | None = None, transfer: image_io.Transfer = "auto") -> dict:
    """A JSON-ready description of a stack and every decision taken about it.

    Pixels are decoded only when the exposure ratios must be estimated from them.
    """
    validate(source)
    plan = plan_exposures(source, ratios)
    notes = list(source.notes)
    if plan is None:
        stack = load_stack(source, ratios, transfer)
        infos, found, how, notes, camera = stack.infos, stack.ratios, stack.ratio_source, list(stack.notes), stack.camera
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
    return {
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
