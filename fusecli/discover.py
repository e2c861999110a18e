"""Finding bracket stacks on disk (headers only) and grouping frames into brackets: the
:class:`StackSource` of each, which :mod:`fusecli.stack` opens.

A folder with a label or an exposure list is one stack. Otherwise its frames, in capture order, are
split into brackets and single shots by :func:`fusecli.grouping.split_brackets` (``GroupOptions``
chooses how). A folder whose subfolders hold frames is a folder of stacks. A file or folder that
cannot be read fails its own stack only (``StackSource.error``). fusecli's own outputs are never
frames, and no two stacks share a name.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import Sequence

from fusecli.choices import Grouping
from fusecli.errors import FuseError, UsageError
from fusecli.grouping import Group, split_brackets
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FRAME_EXTENSIONS, LABEL_EXTENSIONS, RAW_EXTENSIONS, FrameInfo

SIDECAR_NAMES = ("relative_exposure.txt", "exposures.txt", "image_list.txt")


@dataclass(frozen=True)
class GroupOptions:
    """How frames become brackets: ``group`` auto (the pictures and the metadata), sequence (the
    metadata alone) or folder (each folder whole); ``group_size`` fixed brackets of N frames;
    ``user_ratios``: the user gave the ratios, so frames that share one EXIF exposure stay a bracket."""

    group: Grouping = Grouping.auto
    group_size: int | None = None
    user_ratios: bool = False


@dataclass(frozen=True)
class StackSource:
    """A bracket found on disk, before decoding: its frames in capture order and what came with them."""

    name: str
    frames: tuple[FrameInfo, ...]
    label: Path | None = None
    sidecar: Path | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None  # why it cannot be opened (a file that could not be read), found at discovery
    single: bool = False  # a single shot, not a bracket: listed, never fused

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


def _make_source(name: str, items: list[FrameInfo], *, label=None, sidecar=None, notes=(), single=False) -> StackSource:
    return StackSource(name, tuple(items), label, sidecar, tuple(notes), single=single)


def _stack_name(first: FrameInfo) -> str:
    return first.path.stem if first.page is None else f"{first.path.stem}_{first.page}"


def _group(items: list[FrameInfo], folder_name: str, *, options: GroupOptions, notes: list[str]) -> list[StackSource]:
    """One folder's frames (or the files given) -> its brackets and single shots, by ``options``."""
    items = _capture_order(items)
    if options.group_size is not None:
        if len(items) % options.group_size:
            raise FuseError(
                f"{items[0].path.parent}: {len(items)} frames do not split into brackets of --group-size "
                f"{options.group_size}"
            )
        n = options.group_size
        groups = [Group(items[i : i + n], f"brackets of {n} (--group-size)") for i in range(0, len(items), n)]
    elif options.group == "folder":
        groups = [Group(items, "the folder is one bracket (--group folder)")]
    else:
        groups = split_brackets(items, pictures=options.group == "auto", singles=not options.user_ratios)
    brackets = [g for g in groups if not g.single]
    if len(groups) == 1 and brackets:
        return [_make_source(folder_name, items, notes=[*notes, f"one stack: {groups[0].why}", *groups[0].notes])]
    out, j = [], 0
    for g in groups:
        if g.single:
            out.append(_make_source(_stack_name(g.frames[0]), g.frames, notes=[*notes, *g.notes], single=True))
            continue
        j += 1
        where = f"bracket {j} of {len(brackets)} in the folder: {g.why}"
        out.append(_make_source(_stack_name(g.frames[0]), g.frames, notes=[*notes, where, *g.notes]))
    return out


def _probe_all(files: list[Path]) -> tuple[list[FrameInfo], list[tuple[Path, str]]]:
    """Headers of every file -> (frames, [(file, why it cannot be read)]). A file whose header makes
    a reader fail in an unforeseen way is unreadable too, with the reader's words."""
    items, broken = [], []
    for f in files:
        try:
            if not f.is_file():  # a FIFO or device would block or never end: refused before opening
                raise FuseError(f"{f}: not a regular file")
            items += _probe(f)
        except FuseError as e:
            broken.append((f, str(e)))
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError, struct_error) as e:
            broken.append((f, f"{f}: cannot read its metadata ({type(e).__name__}: {e})"))
    return items, broken


def _place_broken(stacks: list[StackSource], broken: list[tuple[Path, str]]) -> list[StackSource]:
    """Each file that could not be read fails the bracket it sits in (its neighbours in name order
    belong to one bracket: that bracket would be fused without it), else it is a failed stack of its
    own. Returns ``stacks`` with those brackets failed, then the broken files' own stacks."""
    if not broken:
        return stacks
    frames = sorted(((f.path, k) for k, s in enumerate(stacks) for f in s.frames), key=lambda t: _natural_key(t[0]))
    keys = [_natural_key(p) for p, _ in frames]
    failed: dict[int, str] = {}
    alone = []
    for path, why in broken:
        at = bisect.bisect_left(keys, _natural_key(path))
        before = frames[at - 1][1] if at > 0 else None
        after = frames[at][1] if at < len(frames) else None
        if before is not None and before == after and not stacks[before].single:
            failed.setdefault(before, f"{why} (a frame of this bracket)")
        else:
            alone.append(StackSource(path.stem, (), error=why))
    out = [dataclasses.replace(s, error=failed[k]) if k in failed else s for k, s in enumerate(stacks)]
    return out + alone


def _folder_stacks(folder: Path, entries: list[Path], options: GroupOptions) -> list[StackSource]:
    """The stacks of one folder's own frame files (not its subfolders'). A file that cannot be read
    fails its stack only: the folder's one stack when it has a label or exposure list, else the
    bracket it sits in (:func:`_place_broken`)."""
    files, notes = _drop_raw_duplicates([p for p in entries if _is_frame_file(p)])
    if not files:
        return []
    labels = [p for p in entries if p.is_file() and p.stem.lower() == "label" and p.suffix.lower() in LABEL_EXTENSIONS]
    if len(labels) > 1:
        names = ", ".join(p.name for p in labels)
        return [StackSource(folder.name, (), error=f"{folder}: more than one label ({names})")]
    sidecars = [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()] + sorted(folder.glob("*_image_list.txt"))
    label, sidecar = (labels[0] if labels else None), (sidecars[0] if sidecars else None)
    items, broken = _probe_all(files)
    if label is not None or sidecar is not None:
        why = "a label" if label is not None else f"an exposure list ({sidecar.name})"
        error = broken[0][1] if broken else None
        note = f"one stack: the folder has {why}"
        return [StackSource(folder.name, tuple(_capture_order(items)), label, sidecar, (*notes, note), error)]
    if not items:
        return [StackSource(folder.name, (), notes=tuple(notes), error=broken[0][1])]
    stacks = []
    multipage = {i.path for i in items if i.page is not None and i.page > 0}
    for f in sorted(multipage, key=_natural_key):  # a multi-page TIFF is a stack of its own
        stacks.append(_make_source(f.stem, [i for i in items if i.path == f], notes=["one multi-page TIFF"]))
    rest = [i for i in items if i.path not in multipage]
    if rest:
        stacks += _group(rest, folder.name, options=options, notes=notes)
    return _place_broken(stacks, broken)


def _discover_folder(folder: Path, options: GroupOptions, seen: set[tuple[int, int]]) -> list[StackSource]:
    """Stacks in ``folder`` and its subfolders; each real folder is visited once (``seen`` holds the
    (device, inode) of those visited), so a symlink loop cannot make discovery run forever. A
    subfolder that cannot be listed is a failed stack of its own."""
    try:
        st = folder.stat()
        entries = sorted(folder.iterdir(), key=_natural_key)
    except OSError as e:
        raise FuseError(f"{folder}: cannot list the folder ({e.strerror})") from None
    if (st.st_dev, st.st_ino) in seen:
        return []
    seen.add((st.st_dev, st.st_ino))
    stacks = _folder_stacks(folder, entries, options)
    for sub in entries:
        if sub.is_dir() and not sub.name.startswith("."):
            try:
                stacks += _discover_folder(sub, options, seen)
            except FuseError as e:
                stacks.append(StackSource(sub.name, (), error=str(e)))
    return stacks


def select_shard(sources: Sequence[StackSource], index: int, count: int) -> list[StackSource]:
    """Shard ``index`` (1-based) of ``count``: the stacks whose rank by name is index - 1 modulo
    count. Every run of a job array (SLURM, Kubernetes indexed jobs, GNU parallel) discovers the same
    stacks, so the shards are disjoint and together hold every stack, with no coordination."""
    ordered = sorted(sources, key=lambda s: s.name)
    return ordered[index - 1 :: count]


def discover(paths: Sequence[Path], options: GroupOptions = GroupOptions()) -> list[StackSource]:
    """Find the brackets and single shots in folders and files (headers and small previews only:
    no frame is decoded in full), named uniquely."""
    if options.group_size is not None and options.group_size < 2:
        raise UsageError(f"--group-size {options.group_size}: a bracket needs at least 2 frames")
    stacks: list[StackSource] = []
    loose: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FuseError(f"{path}: no such file or folder")
        if path.is_dir():
            found = _discover_folder(path, options, seen)
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
        found = []
        if len(files) == 1 and len(items) > 1:
            found.append(_make_source(files[0].stem, items, notes=["one multi-page TIFF"]))
        elif items:
            found += _group(items, items[0].path.stem, options=options, notes=notes)
        stacks += _place_broken(found, broken)
    return unique_names(stacks)


def unique_names(stacks: Sequence[StackSource]) -> list[StackSource]:
    """Stack names become output names: a name that repeats one before it (folders of one name in
    different places) takes the first of NAME_2, NAME_3, ... that no stack has, ignoring case (as a
    macOS or Windows disk does), so no two outputs can ever collide."""
    taken = {s.name.casefold() for s in stacks}
    given: set[str] = set()
    out = []
    for s in stacks:
        name = s.name
        if name.casefold() in given:
            n = 2
            while f"{s.name}_{n}".casefold() in taken:
                n += 1
            name = f"{s.name}_{n}"
            taken.add(name.casefold())
        given.add(name.casefold())
        out.append(s if name == s.name else dataclasses.replace(s, name=name))
    return out
