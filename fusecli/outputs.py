"""What ``fusecli fuse`` writes for a stack: formats, paths, development, DNG/TIFF/previews and weight
maps, each written atomically, and the clean-up of temporaries a killed run left behind.

See README.md ("Fusing") for the formats and the guarantees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import tifffile

from fusecli import colour
from fusecli.errors import FuseError
from fusecli.io import common
from fusecli.io.common import atomic_path
from fusecli.io.dng import Exposure, write_dng
from fusecli.io.raw import BAND_ROWS, CameraInfo, capture_metadata, cfa_offsets, unpack_bayer
from fusecli.stack import Stack, StackSource

RAW_FORMATS = ("dng", "tiff", "jpg", "png")
RGB_FORMATS = ("tiff", "jpg", "png")
SUFFIX = {"dng": ".dng", "tiff": ".tif", "jpg": ".jpg", "png": ".png"}
# OpenCV's edge-aware demosaic (bilinear gave zipper edges on fine detail); OpenCV names Bayer
# patterns by the second row's first two pixels, hence the crossed names.
_OPENCV_BAYER = {
    "RGGB": cv2.COLOR_BayerBG2RGB_EA,
    "BGGR": cv2.COLOR_BayerRG2RGB_EA,
    "GRBG": cv2.COLOR_BayerGB2RGB_EA,
    "GBRG": cv2.COLOR_BayerGR2RGB_EA,
}
# Okabe-Ito colours for the weight maps: frame 0 (the reference) first.
_PALETTE = (
    np.array(
        [
            [240, 228, 66],
            [0, 114, 178],
            [213, 94, 0],
            [0, 158, 115],
            [204, 121, 167],
            [86, 180, 233],
            [230, 159, 0],
        ],
        np.float32,
    )
    / 255
)


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


def develop(rgb: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Camera RGB (..., 3) linear [0, 1] -> linear sRGB [0, 1] with ``camera``'s white balance and
    matrix (:func:`fusecli.colour.develop`)."""
    return colour.develop(rgb, camera.white_balance, camera.color_matrix)


def render_raw(planes: np.ndarray, camera: CameraInfo, linear: bool = False) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w, 3) float32 sRGB (or linear sRGB) [0, 1], upright."""
    mosaic = np.round(unpack_bayer(np.clip(planes, 0, 1), camera.cfa) * 65535).astype(np.uint16)
    demosaiced = cv2.cvtColor(mosaic, _OPENCV_BAYER[camera.cfa]).astype(np.float32) / 65535
    rgb = develop(demosaiced, camera)
    return orient(rgb if linear else colour.linear_to_srgb(rgb), camera.orientation)


def display(chw: np.ndarray, stack: Stack) -> np.ndarray:
    """What a viewer shows of (C, H, W) linear [0, 1] in a stack's domain -> (H', W', 3 or 1) float32
    display-referred [0, 1], upright: RAW developed as the TIFF/JPEG outputs are (demosaic, white
    balance, camera matrix, sRGB curve); RGB and mono with the sRGB curve (for frames decoded from
    sRGB files, the values as stored)."""
    if stack.kind == "raw" and stack.camera is not None:
        return render_raw(chw, stack.camera)
    return colour.linear_to_srgb(np.moveaxis(chw, 0, -1))


def develop_half(planes: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (h, w, 3) linear sRGB [0, 1] at half resolution (R, mean
    of the greens, B: no demosaic), unrotated: for previews and contact sheets."""
    return develop(np.stack([planes[0], 0.5 * (planes[1] + planes[2]), planes[3]], axis=-1), camera)


def dng_preview(planes: np.ndarray, camera: CameraInfo, side: int = 1024) -> np.ndarray:
    """A small sRGB picture of packed planes (4, h, w) [0, 1] for the DNG's preview -> (h', w', 3)
    uint8, longest side at most ``side``, stored unrotated (the DNG's orientation tag applies to it).
    The planes are shrunk before they are developed (developing all 24 MP first cost 0.2-0.6 s of a
    24 MP stack's ~1.2 s on the 2-core CI machine; the two differ only where averaging and clipping
    do not commute, in clipped highlights)."""
    _, h, w = planes.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        planes = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in planes])
    return np.round(colour.linear_to_srgb(develop_half(planes, camera)) * 255).astype(np.uint8)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, ...) image."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](image)) if orientation in ops else image


def weight_map(weights: np.ndarray) -> np.ndarray:
    """(K, Cw, H, W) weights -> (H, W, 3) uint8: each pixel coloured by the frames it came from."""
    w = weights.mean(axis=1)  # per-channel weights: their mean per frame
    colours = np.concatenate([_PALETTE] * (w.shape[0] // len(_PALETTE) + 1))[: w.shape[0]]
    rgb = np.einsum("khw,kc->hwc", w, colours)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def to_mosaic16(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w) uint16 Bayer mosaic (white 65535), in bands of
    :data:`fusecli.io.raw.BAND_ROWS` rows, every plane's rows into one band of the mosaic (the scaled
    and rounded rows stay in the caches: 34-35 -> 28-29 ms at 24 MP, ``python bench/profile_fuse.py``;
    and a 50 MP stack's float mosaic and its rounded copies would cost 600 MB)."""
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
    the image's (one 12 MP TIFF stack's peak RSS: 1.44 -> 1.33 GiB)."""
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
            write_dng(path, mosaic, camera, exposure, "fusecli fuse", preview=dng_preview(fused, stack.camera))
            continue
        if stack.kind == "raw":
            rgb = render_raw(fused, stack.camera, linear=options.linear and fmt == "tiff")
        else:
            if picture is None:
                chw = colour.linear_to_srgb(fused) if stack.transfer == "srgb" else fused
                picture = np.moveaxis(chw, 0, -1)
            rgb = picture
        write_picture(path, rgb, SUFFIX[fmt])
    if options.save_weights and paths[-1] in wanted:
        write_picture(paths[-1], weight_map(weights), ".png")


def remove_stale_parts(out_dir: Path, own: bool = False) -> int:
    """Remove the hidden temporary outputs a run that is no longer alive left in ``out_dir`` (another
    live run's files in progress are kept; ``own=True`` also removes this process's own)."""
    return common.remove_stale_parts(out_dir, (".*_fused.*.part", ".*_weights.png.*.part"), own=own)
