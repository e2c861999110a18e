"""What every reader and writer shares: file kinds, frame metadata, size limits, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from fusecli.errors import FuseError

RAW_EXTENSIONS = frozenset(
    ".dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .pef .srw .3fr .fff .iiq .erf .kdc"
    " .dcr .mrw .mos .x3f .rwl .raw .gpr".split()
)
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
PICTURE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
FRAME_EXTENSIONS = RAW_EXTENSIONS | TIFF_EXTENSIONS | PICTURE_EXTENSIONS
LABEL_EXTENSIONS = TIFF_EXTENSIONS | PICTURE_EXTENSIONS | frozenset({".exr", ".hdr"})

#: Frames larger than this are refused before any pixel is allocated (a 250 MP frame is already
#: twice the largest still camera sensor sold today).
MAX_PIXELS = 250_000_000
MAX_SIDE = 65_535


@dataclass(frozen=True)
class FrameInfo:
    """What one frame's header says, read without decoding its pixels.

    ``width``/``height``/``channels`` describe the frame as fusecli reads it: for RAW, the packed
    half-resolution planes (4 channels). ``exposure_time`` is in seconds; None when missing or 0.
    """

    path: Path
    width: int
    height: int
    channels: int
    kind: str  # "raw", "tiff" or "picture" (8/16-bit PNG or JPEG)
    exposure_time: float | None = None
    iso: float | None = None
    aperture: float | None = None
    timestamp: datetime | None = None
    camera: str | None = None  # "make model", for grouping
    page: int | None = None  # page of a multi-page TIFF
    bit_depth: int | None = None

    @property
    def relative_exposure(self) -> float | None:
        """time x ISO / N^2 (ISO and N where the header has them), or None without a time."""
        if self.exposure_time is None:
            return None
        return self.exposure_time * (self.iso or 1.0) / (self.aperture**2 if self.aperture else 1.0)

    @property
    def name(self) -> str:
        return self.path.name if self.page is None else f"{self.path.name}[{self.page}]"


def positive(value) -> float | None:
    """A metadata number as float, or None when missing, zero, negative or not finite."""
    if value is None:
        return None
    try:
        if isinstance(value, tuple) and len(value) == 2:  # EXIF rational (num, den)
            value = Fraction(int(value[0]), int(value[1])) if value[1] else 0
        value = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return value if value > 0 and value == value and value != float("inf") else None


def parse_exif_datetime(text) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def check_dimensions(path: Path, width: int, height: int, channels: int = 1) -> None:
    """Refuse absurd sizes before allocating anything."""
    if width <= 0 or height <= 0:
        raise FuseError(f"{path}: the image has no pixels ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS or channels > 16:
        raise FuseError(
            f"{path}: absurd dimensions {width}x{height}x{channels}; fusecli reads frames up to "
            f"{MAX_PIXELS // 1_000_000} MP and {MAX_SIDE} px a side"
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_parts(folder: Path, patterns: tuple[str, ...] = (".*.part",), own: bool = False) -> int:
    """Remove the hidden temporaries (``.NAME.PID.*.part``) in ``folder`` that a run which is no
    longer alive left behind -> how many. A live run's file in progress is kept; ``own=True`` also
    removes this process's own (after an interrupt). Temporaries without a PID are left alone."""
    count = 0
    for pattern in patterns:
        for p in Path(folder).glob(pattern):
            parts = p.name.split(".")  # "", name..., PID, random, "part"
            pid = int(parts[-3]) if len(parts) >= 5 and parts[-3].isdigit() else None
            if pid is None or (pid == os.getpid() and not own) or (pid != os.getpid() and _alive(pid)):
                continue
            p.unlink(missing_ok=True)
            count += 1
    return count


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash, an exception or a kill leaves at most a hidden ``.name.PID.*.part`` file, never a partial
    ``path``; the PID in its name lets a later run tell a dead run's leftovers (removed) from a live
    run's file in progress (kept): :func:`remove_stale_parts`.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:  # everything after mkstemp inside: an interrupt at any point still removes the file
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
        tmp_path = Path(tmp)
        os.close(fd)
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600 (and some writers replace the file): the result is an ordinary file
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()
