"""Finding bracket stacks on disk (headers only) and grouping frames into brackets: the
:class:`StackSource` of each, which :mod:`fusecli.stack` opens.

A folder with a label or an exposure list is one stack. Otherwise its frames, in capture order, are
split into brackets by :func:`split_brackets`; ``group_size`` splits into fixed-size brackets
instead. A folder whose subfolders hold frames is a folder of stacks. A file that cannot be read
fails its own stack only (``StackSource.error``). fusecli's own outputs are never frames.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fusecli.errors import FuseError
from fusecli.exposure import SAME_EXPOSURE
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FRAME_EXTENSIONS, LABEL_EXTENSIONS, RAW_EXTENSIONS, FrameInfo

SIDECAR_NAMES = ("relative_exposure.txt", "exposures.txt", "image_list.txt")


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


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _probe(path: Path) -> list[FrameInfo]:
    if path.suffix.lower() in RAW_EXTENSIONS:
        return [raw_io.probe_raw(path)]
    return image_io.probe(path)


#: What fusecli writes next to its outputs: never taken as frames, so ``-o`` may equal an input folder.
OUTPUT_SUFFIXES = ("_fused", "_weights")


def _is_frame_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in FRAME_EXTENSIONS
        and path.stem.lower() != "label"
        and not path.stem.endswith(OUTPUT_SUFFIXES)
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


def _same_exposure(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= SAME_EXPOSURE * max(a, b)


def _same_kind(a: FrameInfo, b: FrameInfo) -> bool:
    return (a.camera, a.width, a.height, a.channels, a.kind) == (b.camera, b.width, b.height, b.channels, b.kind)


def _gap(before: FrameInfo, after: FrameInfo) -> float:
    """Seconds between the end of one capture and the start of the next (0 when a time is missing)."""
    if before.timestamp is None or after.timestamp is None:
        return 0.0
    return (after.timestamp - before.timestamp).total_seconds() - (before.exposure_time or 0.0)


def _split_point(items: list[FrameInfo], lo: int, hi: int) -> int:
    """Where to start a new bracket when the exposure of ``items[hi]`` repeats that of
    ``items[lo - 1]``: any index in [lo, hi] keeps both brackets free of repeats; the largest capture
    gap before it decides, else the latest (a camera's AEB series runs back to back)."""
    gaps = [(max(0.0, _gap(items[p - 1], items[p])), p) for p in range(lo, hi + 1)]
    return max(gaps)[1]


def split_brackets(items: list[FrameInfo]) -> list[tuple[list[FrameInfo], str]]:
    """Frames in capture order -> brackets, each with why it starts where it does.

    A run of frames whose exposures (time x ISO / N^2) all differ is one bracket, however long the
    photographer took between shots. A new bracket starts where the camera, size or kind of file
    changes, or where an exposure repeats (AEB series one after another); capture-time gaps only
    choose where, between the first frame and its repeat, the split goes. A split never leaves a
    one-frame bracket: two shots of one exposure that open a bracket stay in it (both are fused).
    """
    groups: list[tuple[list[FrameInfo], str]] = []
    start, i, why = 0, 1, "the folder's first frames"
    while i < len(items):
        info = items[i]
        if not _same_kind(items[start], info):
            groups.append((items[start:i], why))
            start, why = i, f"{info.name}: the camera, size or kind of file changes"
            i += 1
            continue
        exposure = info.relative_exposure
        repeat = next((j for j in range(start, i) if _same_exposure(items[j].relative_exposure, exposure)), None)
        if repeat is None:
            i += 1
            continue
        if i - start < 2:  # a split here would leave a one-frame "bracket": keep the repeat in it
            i += 1
            continue
        p = _split_point(items, max(repeat + 1, start + 2), i)
        groups.append((items[start:p], why))
        start, why = p, f"{items[p].name}: a new series (the exposure of {info.name} repeats {items[repeat].name}'s)"
    groups.append((items[start:], why))
    return groups


def _make_source(name: str, items: list[FrameInfo], label=None, sidecar=None, notes=()) -> StackSource:
    return StackSource(name=name, frames=tuple(items), label=label, sidecar=sidecar, notes=tuple(notes))


def _stack_name(first: FrameInfo) -> str:
    return first.path.stem if first.page is None else f"{first.path.stem}_{first.page}"


def _group(
    items: list[FrameInfo],
    folder_name: str,
    *,
    label: Path | None,
    sidecar: Path | None,
    group_size: int | None,
    notes: list[str],
) -> list[StackSource]:
    items = _capture_order(items)
    if label is not None or sidecar is not None:
        why = "a label" if label is not None else f"an exposure list ({sidecar.name})"
        return [_make_source(folder_name, items, label, sidecar, notes + [f"one stack: the folder has {why}"])]
    if group_size is not None:
        if len(items) % group_size:
            raise FuseError(
                f"{items[0].path.parent}: {len(items)} frames do not split into brackets of --group-size {group_size}"
            )
        groups = [
            (items[i : i + group_size], f"brackets of {group_size} (--group-size)")
            for i in range(0, len(items), group_size)
        ]
    elif all(i.relative_exposure is None for i in items):
        why = "no exposure metadata: the folder is one bracket (--group-size N splits it)"
        groups = [(items, why)] if all(_same_kind(items[0], i) for i in items) else split_brackets(items)
    else:
        groups = split_brackets(items)
    if len(groups) == 1:
        return [_make_source(folder_name, groups[0][0], notes=notes + [f"one stack: {groups[0][1]}"])]
    n = len(groups)
    return [
        _make_source(_stack_name(g[0]), g, notes=notes + [f"bracket {j + 1} of {n} in the folder: {why}"])
        for j, (g, why) in enumerate(groups)
    ]


def _probe_all(files: list[Path]) -> tuple[list[FrameInfo], list[tuple[Path, str]]]:
    """Headers of every file -> (frames, [(file, why it cannot be read)])."""
    items, broken = [], []
    for f in files:
        try:
            items += _probe(f)
        except FuseError as e:
            broken.append((f, str(e)))
    return items, broken


def _folder_stacks(folder: Path, entries: list[Path], group_size: int | None) -> list[StackSource]:
    """The stacks of one folder's own frame files (not its subfolders'). A file that cannot be read
    fails its stack only: the folder's one stack when it has a label or exposure list, else a stack
    of its own."""
    files, notes = _drop_raw_duplicates([p for p in entries if _is_frame_file(p)])
    if not files:
        return []
    labels = [p for p in entries if p.is_file() and p.stem.lower() == "label" and p.suffix.lower() in LABEL_EXTENSIONS]
    if len(labels) > 1:
        raise FuseError(f"{folder}: more than one label ({', '.join(p.name for p in labels)})")
    sidecars = [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()] + sorted(folder.glob("*_image_list.txt"))
    label, sidecar = (labels[0] if labels else None), (sidecars[0] if sidecars else None)
    items, broken = _probe_all(files)
    if broken and (label is not None or sidecar is not None or not items):
        return [StackSource(folder.name, tuple(items), label, sidecar, tuple(notes), error=broken[0][1])]
    stacks = [StackSource(f.stem, (), error=why) for f, why in broken]
    multipage = {i.path for i in items if i.page is not None and i.page > 0}
    for f in sorted(multipage, key=_natural_key):  # a multi-page TIFF is a stack of its own
        stacks.append(_make_source(f.stem, [i for i in items if i.path == f], notes=["one multi-page TIFF"]))
    single = [i for i in items if i.path not in multipage]
    if single:
        stacks += _group(single, folder.name, label=label, sidecar=sidecar, group_size=group_size, notes=notes)
    return stacks


def _discover_folder(folder: Path, group_size: int | None, seen: set[tuple[int, int]]) -> list[StackSource]:
    """Stacks in ``folder`` and its subfolders; each real folder is visited once (``seen`` holds the
    (device, inode) of those visited), so a symlink loop cannot make discovery run forever."""
    try:
        st = folder.stat()
        entries = sorted(folder.iterdir(), key=_natural_key)
    except OSError as e:
        raise FuseError(f"{folder}: cannot list the folder ({e.strerror})") from None
    if (st.st_dev, st.st_ino) in seen:
        return []
    seen.add((st.st_dev, st.st_ino))
    stacks = _folder_stacks(folder, entries, group_size)
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            stacks += _discover_folder(sub, group_size, seen)
    return stacks


def select_shard(sources: Sequence[StackSource], index: int, count: int) -> list[StackSource]:
    """Shard ``index`` (1-based) of ``count``: the stacks whose rank by name is index - 1 modulo
    count. Every run of a job array (SLURM, Kubernetes indexed jobs, GNU parallel) discovers the same
    stacks, so the shards are disjoint and together hold every stack, with no coordination."""
    ordered = sorted(sources, key=lambda s: s.name)
    return ordered[index - 1 :: count]


def discover(paths: Sequence[Path], group_size: int | None = None) -> list[StackSource]:
    """Find the bracket stacks in folders and files (headers only; nothing is decoded)."""
    if group_size is not None and group_size < 2:
        raise FuseError(f"--group-size {group_size}: a bracket needs at least 2 frames")
    stacks: list[StackSource] = []
    loose: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FuseError(f"{path}: no such file or folder")
        if path.is_dir():
            found = _discover_folder(path, group_size, seen)
            if not found:
                raise FuseError(f"{path}: no RAW, TIFF, PNG or JPEG frames in this folder or its subfolders")
            stacks += found
        elif path.suffix.lower() not in FRAME_EXTENSIONS:
            raise FuseError(f"{path}: not a supported image type (expected RAW, TIFF, PNG or JPEG)")
        else:
            loose.append(path)
    if loose:
        files, notes = _drop_raw_duplicates(loose)
        items, broken = _probe_all(files)
        stacks += [StackSource(f.stem, (), error=why) for f, why in broken]
        if len(files) == 1 and len(items) > 1:
            stacks.append(_make_source(files[0].stem, items, notes=["one multi-page TIFF"]))
        elif items:
            stacks += _group(items, items[0].path.stem, label=None, sidecar=None, group_size=group_size, notes=notes)
    names: dict[str, int] = {}
    unique = []
    for s in stacks:  # stack names become output names: keep them unique
        n = names.get(s.name, 0)
        names[s.name] = n + 1
        unique.append(s if n == 0 else dataclasses.replace(s, name=f"{s.name}_{n + 1}"))
    return unique
