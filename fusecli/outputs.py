"""What ``fusecli fuse`` writes for a stack (HDRMerge's SaveOptions): formats, paths, DNG, TIFF,
JPEG and PNG and weight maps, each written atomically, and the clean-up of temporaries a killed run
left behind. Pictures are developed by :mod:`fusecli.develop`; docs/outputs.md describes the files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import tifffile

from fusecli.choices import OutputFormat, values
from fusecli.develop import dng_preview, linear_to_srgb, render_raw, weight_map
from fusecli.discover import StackSource
from fusecli.errors import FuseError
from fusecli.io import common
from fusecli.io.common import atomic_path
from fusecli.io.dng import Exposure, write_dng
from fusecli.io.raw import BAND_ROWS, capture_metadata, cfa_offsets
from fusecli.stack import Stack

RAW_FORMATS = values(OutputFormat)
RGB_FORMATS = tuple(f for f in RAW_FORMATS if f != "dng")
SUFFIX = {"dng": ".dng", "tiff": ".tif", "jpg": ".jpg", "png": ".png"}


@dataclass(frozen=True)
class OutputOptions:
    """What to write (HDRMerge's SaveOptions): formats (None: dng for RAW stacks, tiff for the
    others), TIFF of RAW stacks kept linear, replace existing outputs, also write weight maps."""

    formats: tuple[str, ...] | None = None
    linear: bool = False
    overwrite: bool = False
    save_weights: bool = False


def formats_for(source: StackSource, options: OutputOptions) -> tuple[str, ...]:
    """The formats written for ``source``; a FuseError names one its kind cannot take."""
    allowed = RAW_FORMATS if source.kind == "raw" else RGB_FORMATS
    formats = options.formats or (("dng",) if source.kind == "raw" else ("tiff",))
    bad = [f for f in formats if f not in allowed]
    if bad:
        raise FuseError(
            f"stack {source.name}: format {', '.join(bad)} is not available for {source.kind} "
            f"stacks (choose from {', '.join(allowed)})"
        )
    return tuple(formats)


def output_paths(source: StackSource, out_dir: Path, options: OutputOptions) -> list[Path]:
    """Where a stack's outputs go: OUT/<stack name>_fused.<ext> (+ _weights.png)."""
    paths = [out_dir / f"{source.name}_fused{SUFFIX[f]}" for f in formats_for(source, options)]
    if options.save_weights:
        paths.append(out_dir / f"{source.name}_weights.png")
    return paths


def to_mosaic16(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w) uint16 Bayer mosaic (white 65535), in bands of
    :data:`fusecli.io.raw.BAND_ROWS` rows, every plane's rows into one band of the mosaic: the scaled
    and rounded rows stay in the caches, and no full-size float copy of the mosaic is made."""
    _, h, w = planes.shape
    mosaic = np.empty((2 * h, 2 * w), np.uint16)
    scratch = np.empty((BAND_ROWS, w), np.float32)
    sites = cfa_offsets(cfa)
    for y in range(0, h, BAND_ROWS):
        n = min(BAND_ROWS, h - y)
        band, rows = mosaic[2 * y : 2 * (y + n)], scratch[:n]
        for plane, (dy, dx) in zip(planes, sites):
            np.multiply(plane[y : y + n], np.float32(65535), out=rows)
            np.rint(rows, out=rows)
            np.clip(rows, 0, 65535, out=rows)
            band[dy::2, dx::2] = rows
    return mosaic


def _quantise(rgb: np.ndarray, dtype: type) -> np.ndarray:
    """(H, W, C) float [0, 1], any strides -> a new C-contiguous (H, W, C) array of ``dtype`` (uint8
    or uint16): round(clip(x) * max). In bands of rows, so the float temporaries are a band's, not
    the image's."""
    top = np.float32(np.iinfo(dtype).max)
    out = np.empty(rgb.shape, dtype)
    for y in range(0, rgb.shape[0], 256):
        band = np.clip(rgb[y : y + 256], 0, 1)
        band *= top
        out[y : y + 256] = np.round(band, out=band)
    return out


def write_picture(path: Path, rgb: np.ndarray, ext: str) -> None:
    """(H, W, 3 or 1) float [0, 1] (already in its transfer), or uint8 -> 8-bit JPEG/PNG or 16-bit
    TIFF, atomically."""
    with atomic_path(path) as tmp:
        if ext == ".tif":
            data = _quantise(rgb, np.uint16)
            photometric = "rgb" if data.shape[-1] == 3 else "minisblack"
            tifffile.imwrite(tmp, data.squeeze(), photometric=photometric, metadata=None)
            return
        data = rgb if rgb.dtype == np.uint8 else _quantise(rgb, np.uint8)
        bgr = data[..., ::-1] if data.shape[-1] == 3 else data
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
        ok, encoded = cv2.imencode(ext, bgr, params)
        if not ok:
            raise FuseError(f"{path}: OpenCV could not encode the image")
        tmp.write_bytes(encoded.tobytes())


def write_outputs(
    stack: Stack,
    source: StackSource,
    fused: np.ndarray,
    weights: np.ndarray | None,
    *,
    options: OutputOptions,
    paths: Sequence[Path],
    only: Sequence[Path] | None = None,
) -> None:
    """Write one stack's outputs to ``paths`` (as :func:`output_paths` gives them), each atomically;
    ``only``: just these of them (the others exist already).

    fused (C, H, W) [0, 1] in the frames' domain; weights (K, Cw, H, W) or None."""
    formats = formats_for(source, options)
    wanted = set(paths if only is None else only)
    picture = None
    for fmt, path in zip(formats, paths):
        if path not in wanted:
            continue
        if fmt == "dng":
            camera = dataclasses.replace(stack.camera, black_level=(0.0,) * 4, white_level=65535.0)
            mosaic = to_mosaic16(fused, camera.cfa)
            ref = stack.infos[0]
            carried = capture_metadata(ref.path)  # lens, focal length, copyright, artist of the reference
            exposure = Exposure(ref.exposure_time, ref.aperture, ref.iso, ref.timestamp, **carried)
            write_dng(path, mosaic, camera, exposure, software="fusecli fuse", preview=dng_preview(fused, stack.camera))
            continue
        if stack.kind == "raw":
            rgb = render_raw(fused, stack.camera, linear=options.linear and fmt == "tiff")
        else:
            if picture is None:
                chw = linear_to_srgb(fused) if stack.transfer == "srgb" else fused
                picture = np.moveaxis(chw, 0, -1)
            rgb = picture
        write_picture(path, rgb, SUFFIX[fmt])
    if options.save_weights and paths[-1] in wanted:
        write_picture(paths[-1], weight_map(weights), ".png")


def remove_stale_parts(out_dir: Path, own: bool = False) -> int:
    """Remove the temporaries that runs no longer alive left in ``out_dir`` (another live run's files
    in progress are kept; ``own=True`` also removes this process's own): see
    :func:`fusecli.io.common.remove_stale_parts`."""
    return common.remove_stale_parts(out_dir, own=own)
