"""Writing Bayer DNG files (tifffile) that the Adobe DNG SDK, LibRaw, darktable and RawTherapee read.

One uncompressed 16-bit CFA image in IFD 0, marked as the main image (NewSubFileType 0, which the
Adobe SDK and so Lightroom require), with the DNG 1.4 tags a raw developer needs, named in
:class:`Tag` and grouped as HDRMerge's DngFloatWriter groups them: sensor (CFA pattern, per-channel
black level, white level), colour (ColorMatrix1 with the source's calibration illuminant,
AsShotNeutral, the source's UniqueCameraModel) and exposure (ExposureTime, FNumber,
ISOSpeedRatings, DateTimeOriginal in an EXIF sub-IFD, where EXIF readers look; DateTime in IFD 0).
Written to a temporary name and renamed, so a crash never leaves a partial file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from fusecli.io.common import atomic_path
from fusecli.io.raw import CameraInfo, cfa_offsets

_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_D65 = 21
# tifffile refuses to write tag 34665 itself: the entry is written as the next (unassigned) code,
# which sorts in the same place among IFD 0's entries, and renamed once the EXIF IFD exists
_EXIF_PLACEHOLDER = 34666


class Tag(IntEnum):
    """The TIFF/EXIF/DNG tags fusecli writes (numbers from the TIFF 6 and DNG 1.4 specifications)."""

    NEW_SUBFILE_TYPE = 254
    MAKE = 271
    MODEL = 272
    ORIENTATION = 274
    SOFTWARE = 305
    EXIF_IFD = 34665
    EXPOSURE_TIME = 33434
    F_NUMBER = 33437
    ISO_SPEED_RATINGS = 34855
    EXIF_VERSION = 36864
    DATE_TIME_ORIGINAL = 36867
    FOCAL_LENGTH = 37386
    LENS_MODEL = 42036
    ARTIST = 315
    COPYRIGHT = 33432
    CFA_REPEAT_PATTERN_DIM = 33421
    CFA_PATTERN = 33422
    DNG_VERSION = 50706
    DNG_BACKWARD_VERSION = 50707
    UNIQUE_CAMERA_MODEL = 50708
    BLACK_LEVEL_REPEAT_DIM = 50713
    BLACK_LEVEL = 50714
    WHITE_LEVEL = 50717
    COLOR_MATRIX_1 = 50721
    AS_SHOT_NEUTRAL = 50728
    CALIBRATION_ILLUMINANT_1 = 50778
    CALIBRATION_ILLUMINANT_2 = 50779
    COLOR_MATRIX_2 = 50722
    FORWARD_MATRIX_1 = 50964
    FORWARD_MATRIX_2 = 50965


@dataclass(frozen=True)
class Exposure:
    """The exposure tags of one frame; None leaves a tag out (0 is written as 0, like real files)."""

    time: float | None = None
    aperture: float | None = None
    iso: float | None = None
    timestamp: datetime | None = None
    focal_length: float | None = None  # mm
    lens: str | None = None
    copyright: str | None = None
    artist: str | None = None


def _rational(value: float, limit: int = 1_000_000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(limit)
    return f.numerator, f.denominator


def _sensor_tags(mosaic_camera: CameraInfo) -> list[tuple]:
    """CFA pattern, black level per position of the 2x2 tile (row-major), white level."""
    black_at = [0.0] * 4
    for value, (dy, dx) in zip(mosaic_camera.black_level, cfa_offsets(mosaic_camera.cfa)):
        black_at[2 * dy + dx] = value
    return [
        (Tag.CFA_REPEAT_PATTERN_DIM, "H", 2, (2, 2), True),
        (Tag.CFA_PATTERN, "B", 4, bytes(_CFA_CODES[c] for c in mosaic_camera.cfa), True),
        (Tag.BLACK_LEVEL_REPEAT_DIM, "H", 2, (2, 2), True),
        (Tag.BLACK_LEVEL, "2I", 4, tuple(v for b in black_at for v in _rational(b)), True),
        (Tag.WHITE_LEVEL, "I", 1, int(round(mosaic_camera.white_level)), True),
    ]


def _colour_tags(camera: CameraInfo) -> list[tuple]:
    """The colour matrix with its illuminant (the source's; D65 when it had none), the white balance
    as AsShotNeutral, and the camera's UniqueCameraModel (the source's, which profiles match on)."""
    unique = camera.unique_model or (
        camera.model if camera.model.lower().startswith(camera.make.lower()) else f"{camera.make} {camera.model}"
    )
    tags = [(Tag.UNIQUE_CAMERA_MODEL, "s", 0, unique.strip(), True)]
    if camera.color_matrix is not None:
        tags.append(
            (Tag.COLOR_MATRIX_1, "2i", 9, tuple(v for m in camera.color_matrix for v in _rational(m, 10_000)), True)
        )
        tags.append((Tag.CALIBRATION_ILLUMINANT_1, "H", 1, int(camera.illuminant or _D65), True))
    for name, values in camera.dng_colour:  # the source's second calibration and forward matrices
        if name == "CalibrationIlluminant2":
            tags.append((Tag.CALIBRATION_ILLUMINANT_2, "H", 1, int(values[0]), True))
        elif len(values) == 18:
            code = {"ColorMatrix2": Tag.COLOR_MATRIX_2, "ForwardMatrix1": Tag.FORWARD_MATRIX_1}.get(
                name, Tag.FORWARD_MATRIX_2
            )
            tags.append((code, "2i", 9, tuple(int(v) for v in values), True))
    wr, wg, wb = camera.white_balance
    tags.append((Tag.AS_SHOT_NEUTRAL, "2I", 3, tuple(v for n in (wg / wr, 1.0, wg / wb) for v in _rational(n)), True))
    return tags


def _exif_ifd(exposure: Exposure, at: int) -> bytes:
    """The EXIF sub-IFD (little-endian) that will sit at file offset ``at``: ExifVersion, the
    exposure time, f-number, ISO and capture time (DateTimeOriginal), where EXIF readers
    (exiftool, RawTherapee, LibRaw) look for them."""
    entries: list[tuple[int, int, int, bytes]] = [(Tag.EXIF_VERSION, 7, 4, b"0230")]  # (tag, type, count, data)
    if exposure.time is not None:
        entries.append((Tag.EXPOSURE_TIME, 5, 1, struct.pack("<II", *_rational(exposure.time))))
    if exposure.aperture is not None:
        entries.append((Tag.F_NUMBER, 5, 1, struct.pack("<II", *_rational(exposure.aperture, 100))))
    if exposure.iso is not None:
        entries.append((Tag.ISO_SPEED_RATINGS, 3, 1, struct.pack("<H", min(65535, int(round(exposure.iso))))))
    if exposure.timestamp is not None:
        entries.append(
            (Tag.DATE_TIME_ORIGINAL, 2, 20, exposure.timestamp.strftime("%Y:%m:%d %H:%M:%S").encode() + b"\0")
        )
    if exposure.focal_length is not None:
        entries.append((Tag.FOCAL_LENGTH, 5, 1, struct.pack("<II", *_rational(exposure.focal_length, 1000))))
    if exposure.lens:
        text = exposure.lens.encode("ascii", "replace") + b"\0"
        entries.append((Tag.LENS_MODEL, 2, len(text), text))
    entries.sort(key=lambda e: e[0])
    size = 2 + 12 * len(entries) + 4
    table, extra = [struct.pack("<H", len(entries))], b""
    for tag, kind, count, data in entries:
        if len(data) <= 4:
            table.append(struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0"))
        else:
            table.append(struct.pack("<HHII", tag, kind, count, at + size + len(extra)))
            extra += data + (b"\0" if len(data) % 2 else b"")
    return b"".join(table) + b"\0\0\0\0" + extra


def _append_exif(path: Path, exposure: Exposure) -> None:
    """Append the EXIF sub-IFD to a written DNG and turn IFD 0's placeholder entry into the ExifIFD
    tag pointing at it (tifffile writes no EXIF IFD of its own)."""
    with tifffile.TiffFile(path) as tf:
        if tf.byteorder != "<" or tf.is_bigtiff:
            return
        entry = tf.pages[0].tags[_EXIF_PLACEHOLDER]
        code_at, value_at = entry.offset, entry.valueoffset
        subifds = tf.pages[0].tags.get(330)  # tifffile writes SubIFDs as type IFD (13); TIFF 6 says LONG
        subifds_at = subifds.offset if subifds is not None and subifds.count == 1 else None
    with open(path, "r+b") as f:
        f.seek(0, 2)
        at = f.tell() + (f.tell() % 2)
        f.write(b"\0" * (at - f.tell()) + _exif_ifd(exposure, at))
        f.seek(code_at)
        f.write(struct.pack("<HHI", int(Tag.EXIF_IFD), 4, 1))  # LONG, as TIFF readers expect an IFD offset
        f.seek(value_at)
        f.write(struct.pack("<I", at))
        if subifds_at is not None:
            f.seek(subifds_at + 2)
            f.write(struct.pack("<H", 4))


def write_dng(
    path: Path,
    mosaic: np.ndarray,
    camera: CameraInfo,
    exposure: Exposure = Exposure(),
    *,
    software: str = "fusecli",
    preview: np.ndarray | None = None,
) -> None:
    """Write a Bayer mosaic as a DNG. mosaic: (H, W) uint16 raw values (black level included);
    preview: an optional (h, w, 3) uint8 sRGB picture, stored in a SubIFD (NewSubFileType 1) as
    cameras and HDRMerge store theirs, for viewers that do not develop raw data."""
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16 or mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"expected an even-sized (H, W) uint16 mosaic, got {mosaic.shape} {mosaic.dtype}")
    tags = [
        (Tag.NEW_SUBFILE_TYPE, "I", 1, 0, True),  # the main image
        (Tag.MAKE, "s", 0, camera.make, True),
        (Tag.MODEL, "s", 0, camera.model, True),
        (Tag.ORIENTATION, "H", 1, camera.orientation, True),
        (Tag.SOFTWARE, "s", 0, software, True),
        (Tag.DNG_VERSION, "B", 4, (1, 4, 0, 0), True),
        (Tag.DNG_BACKWARD_VERSION, "B", 4, (1, 1, 0, 0), True),
        *_sensor_tags(camera),
        *_colour_tags(camera),
        (_EXIF_PLACEHOLDER, "I", 1, 0, True),  # becomes ExifIFD once the EXIF IFD is appended
    ]
    owner = ((Tag.ARTIST, exposure.artist), (Tag.COPYRIGHT, exposure.copyright))
    tags += [(tag, "s", 0, text, True) for tag, text in owner if text]
    tags = [(int(t[0]), *t[1:]) for t in sorted(tags, key=lambda t: int(t[0]))]
    when = exposure.timestamp.strftime("%Y:%m:%d %H:%M:%S") if exposure.timestamp else None
    path = Path(path)
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp) as tw:
            tw.write(
                mosaic,
                photometric=32803,
                extratags=tags,
                metadata=None,
                datetime=when,
                software=False,
                subifds=1 if preview is not None else None,
            )
            if preview is not None:
                tw.write(np.ascontiguousarray(preview, dtype=np.uint8), photometric="rgb", subfiletype=1, metadata=None)
        _append_exif(tmp, exposure)
