"""Every choice list of fusecli, declared once: the command line offers them (:mod:`fusecli.options`)
and the library checks its arguments against them. Each is a ``str`` Enum, so a member equals its
value and library functions take either."""

from __future__ import annotations

from enum import Enum


class Transfer(str, Enum):
    """How non-RAW frames are linearised: ``auto`` decides per file (docs/stacks.md)."""

    auto = "auto"
    srgb = "srgb"
    linear = "linear"


class AlignMode(str, Enum):
    """Registration of frames onto the reference (docs/alignment.md)."""

    none = "none"
    translation = "translation"
    homography = "homography"


class Grouping(str, Enum):
    """How frames become brackets (docs/stacks.md): ``auto`` by the pictures and the metadata,
    ``sequence`` by the metadata alone, ``folder`` each folder whole."""

    auto = "auto"
    sequence = "sequence"
    folder = "folder"


class Device(str, Enum):
    """Where the network runs; ``cuda`` without a GPU is an error, not a fallback."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OutputFormat(str, Enum):
    """What ``fuse`` writes (docs/outputs.md); ``dng`` for RAW stacks only."""

    dng = "dng"
    tiff = "tiff"
    jpg = "jpg"
    png = "png"
    exr = "exr"


class DngKind(str, Enum):
    """What a RAW stack's DNG holds: the scene-linear merge (floating point) or the network's
    tone-fused values (16-bit), docs/outputs.md."""

    linear = "linear"
    fused = "fused"


class Method(str, Enum):
    """The built-in methods ``eval`` scores (docs/evaluation.md)."""

    model = "model"
    mertens = "mertens"
    enfuse = "enfuse"
    single = "single"
    uniform = "uniform"


def values(choice: type[Enum]) -> tuple[str, ...]:
    """The values of a choice list, in declaration order."""
    return tuple(m.value for m in choice)
