"""Finding bracket stacks on disk (headers only) and grouping frames into brackets.

A folder with a label or an exposure list is one stack. Otherwise its frames, in capture order, are
split into brackets where the camera or the frame size changes, where more than ``GAP_SECONDS`` pass
between one frame's end and the next one's start, or where an exposure repeats (AEB sequences such
as 0, -2, +2, 0, -2, +2 EV); ``group_size`` splits into fixed-size brackets instead. A folder whose
subfolders hold frames is a folder of stacks. README.md ("Commands") says what ``inspect`` shows.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

from fusecli.errors import FuseError
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FRAME_EXTENSIONS, LABEL_EXTENSIONS, RAW_EXTENSIONS, FrameInfo
from fusecli.stack import SAME_EXPOSURE, StackSource

SIDECAR_NAMES = ("exposures.txt", "image_list.txt")
GAP_SECONDS = 2.0


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
            same_kind = (info.camera, info.width, info.height, info.channels) == (
                first.camera,
                first.width,
                first.height,
                first.channels,
            )
            gap = (
                info.timestamp is not None
                and previous.timestamp is not None
                and (info.timestamp - previous.timestamp).total_seconds()
                > (previous.exposure_time or 0.0) + GAP_SECONDS
            )
            repeated = info.exposure_time is not None and any(
                f.exposure_time is not None
                and abs(f.exposure_time - info.exposure_time) <= SAME_EXPOSURE * info.exposure_time
                for f in current
            )
            if same_kind and not gap and not repeated:
                current.append(info)
                continue
        groups.append([info])
    return groups


def _make_source(name: str, items: list[FrameInfo], label=None, sidecar=None, notes=()) -> StackSource:
    return StackSource(name=name, frames=tuple(items), label=label, sidecar=sidecar, notes=tuple(notes))


def _group(
    items: list[FrameInfo],
    folder_name: str,
    label: Path | None,
    sidecar: Path | None,
    group_size: int | None,
    notes: list[str],
) -> list[StackSource]:
    items = _capture_order(items)
    if label is not None or sidecar is not None:
        why = "a label" if label is not None else "an exposure list"
        return [_make_source(folder_name, items, label, sidecar, notes + [f"one stack: the folder has {why}"])]
    if group_size is not None:
        if len(items) % group_size:
            raise FuseError(
                f"{items[0].path.parent}: {len(items)} frames do not split into brackets of --group-size {group_size}"
            )
        groups = [items[i : i + group_size] for i in range(0, len(items), group_size)]
        how = f"split into brackets of {group_size} (--group-size)"
    else:
        groups = _split_brackets(items)
        has_time = all(i.timestamp is not None for i in items)
        how = (
            "grouped by capture time, camera, size and exposure"
            if has_time
            else "grouped by camera, size and exposure (no capture times)"
        )
    if len(groups) == 1:
        return [_make_source(folder_name, groups[0], notes=notes)]
    return [
        _make_source(g[0].path.stem if g[0].page is None else f"{g[0].path.stem}_{g[0].page}", g, notes=notes + [how])
        for g in groups
    ]


def _discover_folder(folder: Path, group_size: int | None) -> list[StackSource]:
    entries = sorted(folder.iterdir(), key=_natural_key)
    files, notes = _drop_raw_duplicates([p for p in entries if _is_frame_file(p)])
    stacks: list[StackSource] = []
    if files:
        labels = [
            p for p in entries if p.is_file() and p.stem.lower() == "label" and p.suffix.lower() in LABEL_EXTENSIONS
        ]
        if len(labels) > 1:
            raise FuseError(f"{folder}: more than one label ({', '.join(p.name for p in labels)})")
        sidecars = [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()] + sorted(
            folder.glob("*_image_list.txt")
        )
        items = [item for f in files for item in _probe(f)]
        multipage = [
            f for f in files if f.suffix.lower() in {".tif", ".tiff"} and sum(1 for i in items if i.path == f) > 1
        ]
        for f in multipage:  # a multi-page TIFF is a stack of its own
            stacks.append(_make_source(f.stem, [i for i in items if i.path == f], notes=["one multi-page TIFF"]))
        single = [i for i in items if i.path not in multipage]
        if single:
            stacks += _group(
                single, folder.name, labels[0] if labels else None, sidecars[0] if sidecars else None, group_size, notes
            )
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
