"""Writing Bayer DNG files (tifffile) that the Adobe DNG SDK, LibRaw, darktable and RawTherapee read.

One CFA image in IFD 0, marked as the main image (NewSubFileType 0, which the Adobe SDK and so
Lightroom require): 16-bit integers uncompressed, or (DNG 1.4) 16- or 32-bit floating point in
tiles compressed with deflate after the floating-point predictor (HDRMerge's layout). The DNG 1.4
tags a raw developer needs are named in :class:`Tag` and grouped as HDRMerge's DngFloatWriter
groups them: sensor (CFA pattern, per-channel black level, white level), colour (ColorMatrix1 with
the source's calibration illuminant, AsShotNeutral, the source's UniqueCameraModel, BaselineExposure)
and the shot (its EXIF and GPS sub-IFDs, where EXIF readers look, XMP, artist and copyright:
:mod:`fusecli.io.metadata`; DateTime in IFD 0). Written to a temporary name and renamed, so a crash
never leaves a partial file.
"""

from __future__ import annotations

from enum import IntEnum
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile

from fusecli.io.common import atomic_path
from fusecli.io.metadata import Capture, append_sub_ifds, tiff_tags
from fusecli.io.raw import CameraInfo, cfa_offsets

_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_D65 = 21


class Tag(IntEnum):
    """The TIFF/DNG tags of the raw image fusecli writes (numbers from the TIFF 6 and DNG 1.4
    specifications); the shot's tags are :mod:`fusecli.io.metadata`'s."""

    NEW_SUBFILE_TYPE = 254
    MAKE = 271
    MODEL = 272
    ORIENTATION = 274
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
    BASELINE_EXPOSURE = 50730
    FORWARD_MATRIX_1 = 50964
    FORWARD_MATRIX_2 = 50965


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


def write_dng(
    path: Path,
    mosaic: np.ndarray,
    camera: CameraInfo,
    capture: Capture = Capture(),
    *,
    software: str = "fusecli",
    description: str = "",
    preview: np.ndarray | None = None,
    baseline_exposure: float | None = None,
) -> None:
    """Write a Bayer mosaic as a DNG. mosaic: (H, W) uint16 raw values (black level included), or
    float16/float32 linear values (``camera``'s levels then say black 0 and white 1);
    baseline_exposure: EV a raw developer adds when it opens the file (DNG BaselineExposure);
    capture: the shot's metadata (:mod:`fusecli.io.metadata`: EXIF and GPS sub-IFDs, XMP, artist,
    copyright); preview: an optional (h, w, 3) uint8 sRGB picture, stored JPEG-compressed in a SubIFD
    (NewSubFileType 1) as cameras and HDRMerge store theirs, for viewers that do not develop raw data."""
    floating = mosaic.dtype in (np.float16, np.float32)
    if mosaic.ndim != 2 or not (floating or mosaic.dtype == np.uint16) or mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"expected an even-sized (H, W) uint16 or float mosaic, got {mosaic.shape} {mosaic.dtype}")
    tags = [
        (Tag.NEW_SUBFILE_TYPE, "I", 1, 0, True),  # the main image
        (Tag.MAKE, "s", 0, camera.make, True),
        (Tag.MODEL, "s", 0, camera.model, True),
        (Tag.ORIENTATION, "H", 1, camera.orientation, True),
        (Tag.DNG_VERSION, "B", 4, (1, 4, 0, 0), True),
        (Tag.DNG_BACKWARD_VERSION, "B", 4, (1, 1, 0, 0), True),
        *_sensor_tags(camera),
        *_colour_tags(camera),
        *tiff_tags(capture, software=software, description=description, camera=False),
    ]
    if baseline_exposure is not None:
        tags.append((Tag.BASELINE_EXPOSURE, "2i", 1, _rational(baseline_exposure, 10_000), True))
    # floating point: 256x256 tiles, deflate after the predictor that differences every second
    # sample (the same CFA colour), as HDRMerge and the DNG SDK write them; level 3 compresses as
    # fast as level 1, within 1 % of level 6's size
    layout = {
        "compression": "adobe_deflate",
        "compressionargs": {"level": 3},
        "predictor": 34894,
        "tile": (256, 256),
        "maxworkers": 2,
    }
    tags = [(int(t[0]), *t[1:]) for t in sorted(tags, key=lambda t: int(t[0]))]
    when = capture.timestamp
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
                **(layout if floating else {}),
            )
            if preview is not None:
                tw.write(  # JPEG as cameras and HDRMerge store it: a fraction of the raw data's size
                    np.ascontiguousarray(preview, dtype=np.uint8),
                    photometric="rgb",  # tifffile encodes RGB as a YCbCr JPEG and says so
                    compression="jpeg",
                    compressionargs={"level": 90},
                    rowsperstrip=preview.shape[0],  # one JPEG stream, as readers of previews expect
                    subfiletype=1,
                    metadata=None,
                )
        append_sub_ifds(tmp, capture)
