"""Which frames of a folder are one bracket: a bracket is frames of one scene at different exposures.

Frames in capture order are split where the camera, size or kind of file changes, where the pictures
show another scene, where EXIF says an auto-bracket series begins or ends, and, within one scene,
where an exposure repeats (a camera's AEB series one after another). The pictures are compared on
small previews (:func:`thumbnail`) by an exposure-invariant structure score (:func:`structure`);
where they cannot tell, a long pause between two shots starts a new bracket. A frame left alone, or
frames that share one exposure, are single shots: listed, never fused. docs/stacks.md describes the
rules; ``--group sequence`` groups by the metadata alone, ``--group folder`` takes each folder whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from fusecli.exposure import SAME_EXPOSURE
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import FrameInfo

#: Long side of the previews the scenes are compared on (pixels).
THUMB_SIDE = 128
#: Preview values (display-referred) that a frame exposes well: above its black, below its clipping.
WELL_EXPOSED = (0.01, 0.98)
#: Structure at or above: the same scene; below OTHER_SCENE: another one, where at least
#: TELLING_SHARE of the pixels are well exposed in both (fewer: two exposures far apart, whose low
#: score tells little); between, or where the pictures cannot tell, the time decides.
SAME_SCENE = 0.5
OTHER_SCENE = 0.45
TELLING_SHARE = 0.10
#: Seconds between two shots after which, where the pictures cannot tell, a new bracket starts
#: (manual brackets on a tripod take up to a minute or so between frames).
LONG_GAP = 300.0
#: How many of the current bracket's last frames a new frame is compared with (AEB and manual orders
#: put frames far apart in exposure side by side, where the frame before may share little with it).
COMPARED = 12


@dataclass
class Group:
    """Frames of one bracket (or one single shot), why it starts where it does, and how it was told
    apart: ``cause`` is "first", "kind", "exif", "scene", "gap", "repeat" or "size" (--group-size)."""

    frames: list[FrameInfo]
    why: str
    cause: str = "first"
    notes: list[str] = field(default_factory=list)
    single: bool = False
    likeness: float | None = None  # structure of the frame that started it against the bracket before


# --- the pictures ------------------------------------------------------------------------------


def thumbnail(info: FrameInfo, side: int = THUMB_SIDE) -> np.ndarray | None:
    """A frame as a small grey display-referred picture -> (h, w) float32 [0, 1], long side ``side``,
    or None when it cannot be read (the frame then fails on its own when its bracket is decoded)."""
    grey = raw_io.preview(info.path, side) if info.kind == "raw" else image_io.preview(info, side)
    if grey is None or min(grey.shape) < 8:
        return None
    scale = side / max(grey.shape)
    if scale < 1:
        size = (max(8, round(grey.shape[1] * scale)), max(8, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey, dtype=np.float32)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of the values of ``x`` (any shape) scaled to [0, 1), equal values sharing their mean
    rank (a clipped or black region stays flat), as float32 of the same shape."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    mean_rank = (np.cumsum(counts) - (counts + 1) / 2) / x.size
    return mean_rank[inverse].reshape(x.shape).astype(np.float32)


class Likeness(NamedTuple):
    """How alike two previews are: ``score`` in [-1, 1] (1: the same picture; None where under 3 %
    of the pixels are well exposed in both) and ``share``, the share of pixels well exposed in both."""

    score: float | None
    share: float


def structure(a: np.ndarray, b: np.ndarray) -> Likeness:
    """How alike two previews are, whatever their exposures: (h, w) float32 [0, 1] each -> their
    :class:`Likeness`. Over the pixels both expose well (slightly blurred, so that a handheld
    frame's small motion and noise count little), the score is the mean of the rank correlation of
    their values (an exposure change keeps the order of brightness) and of the agreement of their
    log gradients' directions, weighted by the weaker gradient (an exposure change keeps every
    edge's direction)."""
    if b.shape != a.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    return _likeness(cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0))


def _likeness(a: np.ndarray, b: np.ndarray) -> Likeness:
    """:func:`structure` of two blurred previews of one size."""
    lo, hi = WELL_EXPOSED
    valid = (a > lo) & (a < hi) & (b > lo) & (b < hi)
    share = float(valid.mean())
    if int(valid.sum()) < max(64, 0.03 * a.size):
        return Likeness(None, share)
    x, y = a[valid], b[valid]
    rx, ry = _ranks(x), _ranks(y)
    scores = []
    if np.ptp(rx) > 0 and np.ptp(ry) > 0:  # (a flat picture has no order of brightness)
        scores.append(float(np.corrcoef(rx, ry)[0, 1]))
    la, lb = np.log(np.clip(a, 1e-3, 1.0)), np.log(np.clip(b, 1e-3, 1.0))
    ga = cv2.Sobel(la, cv2.CV_32F, 1, 0), cv2.Sobel(la, cv2.CV_32F, 0, 1)
    gb = cv2.Sobel(lb, cv2.CV_32F, 1, 0), cv2.Sobel(lb, cv2.CV_32F, 0, 1)
    ma, mb = np.hypot(*ga), np.hypot(*gb)
    weight = np.minimum(ma, mb) * valid
    if float(weight.sum()) > 1e-6:  # (nor edges)
        cosine = (ga[0] * gb[0] + ga[1] * gb[1]) / np.maximum(ma * mb, 1e-12)
        scores.append(float((cosine * weight).sum() / weight.sum()))
    return Likeness(float(np.mean(scores)) if scores else None, share)


# --- grouping ----------------------------------------------------------------------------------


def same_exposure(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= SAME_EXPOSURE * max(a, b)


def same_kind(a: FrameInfo, b: FrameInfo) -> bool:
    return (a.camera, a.width, a.height, a.channels, a.kind) == (b.camera, b.width, b.height, b.channels, b.kind)


def gap(before: FrameInfo, after: FrameInfo) -> float:
    """Seconds between the end of one capture and the start of the next (0 when a time is missing)."""
    if before.timestamp is None or after.timestamp is None:
        return 0.0
    return (after.timestamp - before.timestamp).total_seconds() - (before.exposure_time or 0.0)


def _split_point(items: list[FrameInfo], lo: int, hi: int) -> int:
    """Where to start a new bracket when the exposure of ``items[hi]`` repeats that of
    ``items[lo - 1]``: any index in [lo, hi] keeps both brackets free of repeats; the largest capture
    gap before it decides, else the latest (a camera's AEB series runs back to back)."""
    gaps = [(max(0.0, gap(items[p - 1], items[p])), p) for p in range(lo, hi + 1)]
    return max(gaps)[1]


class _Scenes:
    """Previews read once each, the structure of frame pairs, and the scores of the frames joined to
    the bracket being built (its note), for one folder's frames."""

    def __init__(self, items: list[FrameInfo]) -> None:
        self.items = items
        self.thumbs: dict[int, np.ndarray | None] = {}
        self.joined: list[tuple[int, str]] = []  # (frame, its score) of the frames joined so far
        self.last: float | None = None  # the score of the latest frame compared

    def _thumb(self, i: int) -> np.ndarray | None:
        if i not in self.thumbs:
            self.thumbs[i] = thumbnail(self.items[i])
        return self.thumbs[i]

    def best(self, i: int, members: range) -> tuple[Likeness, int]:
        """The most alike of frame ``i`` and the last :data:`COMPARED` of ``members`` -> (their
        likeness, score None where no pair can tell; the member it was found with)."""
        found: tuple[Likeness, int] = (Likeness(None, 0.0), members[-1])
        for j in list(members)[-COMPARED:][::-1]:
            a, b = self._thumb(j), self._thumb(i)
            if a is None or b is None:
                continue
            like = structure(a, b)
            if like.score is not None and (found[0].score is None or like.score > found[0].score):
                found = (like, j)
        return found

    def note(self, end: int) -> list[str]:
        """The note of the bracket closed before frame ``end`` (how alike its frames were); the
        frames after ``end``, which opens the next, are kept for that one."""
        mine = [text for k, text in self.joined if k < end]
        self.joined = [(k, text) for k, text in self.joined if k > end]
        return ["one scene: structure " + ", ".join(mine)] if mine else []


def _boundary(items: list[FrameInfo], start: int, i: int, scenes: _Scenes | None) -> tuple[str, str] | None:
    """Why frame ``i`` starts a new bracket after ``items[start:i]`` for a reason other than a repeated
    exposure -> (cause, reason), or None: it belongs with them."""
    if i <= start:  # the frame opens the bracket
        return None
    info, before = items[i], items[i - 1]
    if not same_kind(items[start], info):
        return "kind", f"{info.name}: the camera, size or kind of file changes"
    if info.auto_bracket is not None and before.auto_bracket is not None and info.auto_bracket != before.auto_bracket:
        what = "an auto-bracket series begins" if info.auto_bracket else "a shot outside the auto-bracket series"
        return "exif", f"{info.name}: {what} (EXIF exposure mode)"
    if scenes is None:
        return None
    like, j = scenes.best(i, range(start, i))
    score, seconds = like.score, gap(before, info)
    scenes.last = score
    if score is not None and score < OTHER_SCENE and like.share >= TELLING_SHARE:
        return "scene", f"{info.name}: another scene than {items[j].name} (structure {score:.2f})"
    if (score is None or score < SAME_SCENE) and seconds > LONG_GAP:
        told = "the pictures cannot tell" if score is None else f"structure {score:.2f} does not tell"
        return "gap", f"{info.name}: shot {_duration(seconds)} after {before.name}, and {told}"
    scenes.joined.append((i, f"{info.name} {score:.2f}" if score is not None else f"{info.name} ?"))
    return None


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def split_brackets(items: list[FrameInfo], *, pictures: bool = True, singles: bool = True) -> list[Group]:
    """Frames in capture order -> brackets and single shots, each with why it starts where it does.

    A new bracket starts where :func:`_boundary` says (camera or kind of file, EXIF's auto-bracket
    mode, another scene, a long pause the pictures cannot explain; ``pictures=False``: the metadata
    alone) or where an exposure repeats within one scene, the capture-time gaps choosing where,
    between the first frame and its repeat, the split goes. A repeat that would leave a one-frame
    bracket stays in the bracket (both are fused). Then a frame alone, or (``singles``) frames that
    all share one exposure, are single shots."""
    scenes = _Scenes(items) if pictures else None
    groups: list[Group] = []
    start, i, why, cause, likeness = 0, 1, "the folder's first frames", "first", None
    while i < len(items):
        info = items[i]
        found = _boundary(items, start, i, scenes)
        if found is not None:
            groups.append(Group(items[start:i], why, cause, scenes.note(i) if scenes else [], likeness=likeness))
            start, (cause, why), likeness = i, found, scenes.last if scenes else None
            i += 1
            continue
        exposure = info.relative_exposure
        repeat = next((j for j in range(start, i) if same_exposure(items[j].relative_exposure, exposure)), None)
        if repeat is None or i - start < 2:  # a split here would leave a one-frame "bracket": keep the repeat in it
            i += 1
            continue
        p = _split_point(items, max(repeat + 1, start + 2), i)
        groups.append(Group(items[start:p], why, cause, scenes.note(p) if scenes else [], likeness=likeness))
        start, cause, likeness = p, "repeat", scenes.last if scenes else None
        why = f"{items[p].name}: a new series (the exposure of {info.name} repeats {items[repeat].name}'s)"
    groups.append(Group(items[start:], why, cause, scenes.note(len(items)) if scenes else [], likeness=likeness))
    return _singles(_rejoin(groups, pictures), equal_exposures=singles)


def _rejoin(groups: list[Group], pictures: bool) -> list[Group]:
    """A one-frame bracket split off only because its exposure repeats one of the bracket before it,
    and whose picture is of that scene (``pictures``; without them, the metadata cannot tell other),
    is a re-shot: it rejoins that bracket, and both frames of that exposure are fused."""
    out: list[Group] = []
    for g in groups:
        same = not pictures or (g.likeness is not None and g.likeness >= SAME_SCENE)
        if out and g.cause == "repeat" and len(g.frames) == 1 and same:
            out[-1].frames.extend(g.frames)
            out[-1].notes.append(f"{g.frames[0].name} repeats an exposure of this bracket's scene: both are fused")
            continue
        out.append(g)
    return out


def _singles(groups: list[Group], equal_exposures: bool) -> list[Group]:
    """Brackets of one frame, or (``equal_exposures``) of frames that all share one exposure, become
    single shots (one group each): nothing to fuse, and not a failure."""
    out: list[Group] = []
    for g in groups:
        exposures = [f.relative_exposure for f in g.frames]
        alike = (
            equal_exposures
            and len(g.frames) > 1
            and None not in exposures
            and all(same_exposure(exposures[0], e) for e in exposures)
        )
        if len(g.frames) == 1:
            out.append(Group(g.frames, g.why, g.cause, [f"a single shot: {g.why}"], single=True))
        elif alike:
            for k, f in enumerate(g.frames):
                why = g.why if k == 0 else f"{f.name}: the same exposure as {g.frames[0].name}"
                note = f"a single shot: frames of one exposure are not a bracket ({why})"
                out.append(Group([f], why, g.cause, [note], single=True))
        else:
            out.append(g)
    return out
