"""What every reader and writer shares: file kinds, frame metadata, size limits, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fusecli.errors import FuseError

if TYPE_CHECKING:
    from fusecli.io.icc import ColourSpace

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
    auto_bracket: bool | None = None  # EXIF ExposureMode: True "auto bracket", False auto or manual, None unknown
    space: ColourSpace | None = field(default=None, compare=False)  # from the file's profile; None: none said
    orientation: int = 1  # EXIF orientation of the stored pixels; width and height are the upright picture's

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


def exposure_mode(value) -> bool | None:
    """EXIF ExposureMode (0 auto, 1 manual, 2 auto bracket) -> whether the shot is part of an
    auto-bracket series; None when the tag is missing or not a number."""
    try:
        mode = int(value[0] if isinstance(value, (tuple, list)) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return mode == 2 if mode in (0, 1, 2) else None


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


def jpeg_grey(source, side: int):
    """A JPEG (a path or its bytes) decoded small and grey -> (h, w) float32 [0, 1] with its long side
    at least ``side`` where the JPEG is that large (the decoder's DCT scaling: 1/2 to 1/8 of the
    pixels are decoded), or None when it cannot be decoded. Orientation is not applied."""
    import io

    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            if im.format != "JPEG":
                return None
            im.draft("L", (side, side))
            return np.asarray(im.convert("L"), np.float32) / np.float32(255)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


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


#: Free space under which a failed write is blamed on a full disk, whatever the writer said.
LOW_SPACE = 64 * 2**20


def write_error(e: Exception, folder: Path) -> str:
    """Why writing into ``folder`` failed, in words: a full disk named as such (ENOSPC or EDQUOT,
    or under :data:`LOW_SPACE` free, since encoders report it in their own words), else the error."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < LOW_SPACE):
        left = f", {free / 2**20:.0f} MiB free" if free is not None else ""
        return f"no space left on the device{left}"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def check_writable(folder: Path, what: str) -> None:
    """A FuseError, before any work is done, when ``folder`` cannot be created or written: its
    nearest existing ancestor is not a folder, or not writable by this user. ``what`` names it."""
    path = Path(folder).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise FuseError(f"{folder}: cannot write the {what} ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FuseError(f"{folder}: cannot write the {what} ({existing} is not writable)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _pid_namespace() -> int:
    """This process's PID namespace (0 where the OS has none): PIDs mean something only within it."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


#: Who writes a temporary: fusecli, this host, this PID namespace, this process. Another host's or
#: container's process cannot be asked whether it is alive, so its temporaries are left alone until
#: they are older than :data:`STALE_AFTER`.
_HOST = hashlib.sha1(socket.gethostname().encode(errors="replace")).hexdigest()[:8]
_OWNER = re.compile(r"\.fc-([0-9a-f]{8})-(\d+)-(\d+)\.[0-9a-f]{8}\.part$")
#: Seconds after which any fusecli temporary is a leftover: writing one output takes seconds.
STALE_AFTER = 3600.0
_NAME_MAX = 255


def temporary_name(path: Path) -> str:
    """The hidden temporary beside ``path`` that its writer renames onto it:
    ``.NAME.fc-HOST-PIDNS-PID.RANDOM.part``, NAME shortened (with a hash of the whole name) where the
    result would pass the file system's 255-byte limit on names."""
    tail = f".fc-{_HOST}-{_pid_namespace()}-{os.getpid()}.{secrets.token_hex(4)}.part"
    name = os.fsencode(Path(path).name)
    room = _NAME_MAX - 1 - len(tail)
    if len(name) > room:
        name = name[: room - 9] + b"~" + hashlib.sha1(name).hexdigest()[:8].encode()
    return "." + os.fsdecode(name) + tail


def remove_stale_parts(folder: Path, own: bool = False) -> int:
    """Remove the fusecli temporaries in ``folder`` that no live run is writing -> how many: those
    of processes of this host and PID namespace that are no longer alive (``own=True``: this
    process's too, after an interrupt), and any older than :data:`STALE_AFTER`. Another live run's
    file in progress is kept, whatever host or container it runs in."""
    count, here, now = 0, (_HOST, _pid_namespace()), time.time()
    for p in Path(folder).glob(".*.part"):
        found = _OWNER.search(p.name)
        if found is None:
            continue
        host, ns, pid = found.group(1), int(found.group(2)), int(found.group(3))
        try:
            old = now - p.stat().st_mtime > STALE_AFTER
        except OSError:
            continue
        if (host, ns) == here:
            gone = (own and pid == os.getpid()) or (pid != os.getpid() and not _alive(pid))
        else:
            gone = False
        if gone or (old and pid != os.getpid()):
            p.unlink(missing_ok=True)
            count += 1
    return count


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash, an exception or a kill leaves at most a hidden temporary (:func:`temporary_name`), never
    a partial ``path``; its name tells a later run whether its writer may still be alive
    (:func:`remove_stale_parts`).
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:  # everything after the file is made inside: an interrupt at any point still removes it
        tmp = path.parent / temporary_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        tmp_path = tmp
        os.close(fd)
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        # the temporary is made 0600 (and some writers replace the file): the result is an ordinary file
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()
