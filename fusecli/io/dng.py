"""Writing Bayer DNG files (tifffile) that LibRaw, darktable and RawTherapee read.

One uncompressed 16-bit CFA image in IFD 0 with the DNG 1.4 tags a raw developer needs: CFA pattern,
per-channel black level (BlackLevelRepeatDim 2x2), white level, ColorMatrix1 (XYZ -> camera,
D65), AsShotNeutral, orientation, make/model, and the exposure (ExposureTime, FNumber,
ISOSpeedRatings, DateTime) in IFD 0, where LibRaw reads them. Written to a temporary name and
renamed, so a crash never leaves a partial file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from fusecli.io.common import atomic_path
from fusecli.io.raw import CameraInfo, cfa_offsets

_CFA_CODES = {"R": 0, "G": 1, "B": 2}


@dataclass(frozen=True)
class Exposure:
    """The exposure tags of one frame; None leaves a tag out (0 is written as 0, like real files)."""

    time: float | None = None
    aperture: float | None = None
    iso: float | None = None
    timestamp: datetime | None = None


def _rational(value: float, limit: int = 1_000_000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(limit)
    return f.numerator, f.denominator


def write_dng(
    path: Path, mosaic: np.ndarray, camera: CameraInfo, exposure: Exposure = Exposure(), software: str = "fusecli"
) -> None:
    """Write a Bayer mosaic as a DNG. mosaic: (H, W) uint16 raw values (black level included)."""
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16 or mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"expected an even-sized (H, W) uint16 mosaic, got {mosaic.shape} {mosaic.dtype}")
    # Black levels are stored per position of the 2x2 tile, row-major.
    black_at = [0.0] * 4
    for value, (dy, dx) in zip(camera.black_level, cfa_offsets(camera.cfa)):
        black_at[2 * dy + dx] = value
    unique_model = f"{camera.make} {camera.model}".strip()
    tags = [
        (271, "s", 0, camera.make, True),
        (272, "s", 0, camera.model, True),
        (274, "H", 1, camera.orientation, True),
        (305, "s", 0, software, True),
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, bytes(_CFA_CODES[c] for c in camera.cfa), True),
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50707, "B", 4, (1, 1, 0, 0), True),
        (50708, "s", 0, unique_model, True),
        (50713, "H", 2, (2, 2), True),
        (50714, "2I", 4, tuple(v for b in black_at for v in _rational(b)), True),
        (50717, "I", 1, int(round(camera.white_level)), True),
    ]
    if camera.color_matrix is not None:
        tags.append((50721, "2i", 9, tuple(v for m in camera.color_matrix for v in _rational(m, 10_000)), True))
        tags.append((50778, "H", 1, 21, True))  # CalibrationIlluminant1 = D65
    wr, wg, wb = camera.white_balance
    tags.append((50728, "2I", 3, tuple(v for n in (wg / wr, 1.0, wg / wb) for v in _rational(n)), True))
    if exposure.time is not None:
        tags.append((33434, "2I", 1, _rational(exposure.time), True))
    if exposure.aperture is not None:
        tags.append((33437, "2I", 1, _rational(exposure.aperture, 100), True))
    if exposure.iso is not None:
        tags.append((34855, "H", 1, int(round(exposure.iso)), True))
    when = exposure.timestamp.strftime("%Y:%m:%d %H:%M:%S") if exposure.timestamp else None
    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, mosaic, photometric=32803, extratags=tags, metadata=None, datetime=when, software=False)
