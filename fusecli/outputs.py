"""What ``fusecli fuse`` writes for a stack (HDRMerge's SaveOptions): formats, paths, DNG, TIFF,
JPEG, PNG, EXR and weight maps, each written atomically, and the clean-up of temporaries a killed
run left behind. Pictures are developed by :mod:`fusecli.develop`; the scene-linear DNG and the EXR
hold :mod:`fusecli.merge`'s merge; docs/outputs.md describes the files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image, PngImagePlugin

from fusecli import __version__
from fusecli.choices import OutputFormat, values
from fusecli.develop import develop_scene, dng_preview, render_raw, weight_map
from fusecli.discover import StackSource
from fusecli.errors import FuseError
from fusecli.io import common, icc
from fusecli.io.common import FrameInfo, atomic_path
from fusecli.io.dng import write_dng
from fusecli.io.exr import write_exr
from fusecli.io.metadata import Capture, append_sub_ifds, exr_attributes, pillow_exif, read_capture, tiff_tags
from fusecli.io.raw import BAND_ROWS, cfa_offsets
from fusecli.stack import Stack

RAW_FORMATS = values(OutputFormat)
RGB_FORMATS = tuple(f for f in RAW_FORMATS if f != "dng")
PICTURES = ("tiff", "jpg", "png")
SUFFIX = {"dng": ".dng", "tiff": ".tif", "jpg": ".jpg", "png": ".png", "exr": ".exr"}
#: The primaries and white of the EXR's linear RGB: Rec. 709 / sRGB, D65 (x, y of R, G, B, white).
REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


#: What a stack gets when --format is not given: the kind of file its frames are.
DEFAULT_FORMAT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".tif": "tiff", ".tiff": "tiff"}


@dataclass(frozen=True)
class OutputOptions:
    """What to write (HDRMerge's SaveOptions): formats (None: the frames' own kind, DNG for RAW),
    TIFF kept linear (with a linear profile), replace existing outputs, also write weight maps,
    JPEG quality, and what a RAW stack's DNG holds (``linear``: the scene-linear merge; ``fused``:
    the network's tone-fused values)."""

    formats: tuple[str, ...] | None = None
    linear: bool = False
    overwrite: bool = False
    save_weights: bool = False
    quality: int = 95
    dng: str = "linear"


def needs(source: StackSource, options: OutputOptions) -> tuple[bool, bool]:
    """What a stack's outputs are made from -> (the network's fusion, the scene-linear merge):
    pictures and weight maps and the tone-fused DNG come from the network; the linear DNG and the
    EXR from the merge, which also gives RAW pictures their colour."""
    formats = formats_for(source, options)
    dng = "dng" in formats
    pictures = any(f in PICTURES for f in formats)
    network = pictures or options.save_weights or (dng and options.dng == "fused")
    raw = source.kind == "raw"
    merge = "exr" in formats or (raw and ((dng and options.dng == "linear") or pictures))
    return network, merge


@dataclass(frozen=True)
class Tagging:
    """What an output file says of itself: the reference frame's capture metadata, the fusion's note
    (Software, ImageDescription), its ICC profile and EXIF ColorSpace (1 sRGB, 65535 another)."""

    capture: Capture
    software: str
    description: str
    icc: bytes | None = None
    colour_space: int = 1


def formats_for(source: StackSource, options: OutputOptions) -> tuple[str, ...]:
    """The formats written for ``source`` (by default its frames' own kind: DNG for RAW, JPEG for
    JPEG, PNG for PNG, TIFF for TIFF); a FuseError names one its kind cannot take."""
    allowed = RAW_FORMATS if source.kind == "raw" else RGB_FORMATS
    own = "dng" if source.kind == "raw" else DEFAULT_FORMAT.get(source.frames[0].path.suffix.lower(), "tiff")
    formats = options.formats or (own,)
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


def to_mosaic(planes: np.ndarray, cfa: str, dtype: type = np.uint16, scale: float = 1.0) -> np.ndarray:
    """Packed planes (4, h, w) -> (2h, 2w) Bayer mosaic: uint16 of ``planes`` x ``scale`` in [0, 1]
    (white 65535, rounded), or float16 of it clipped to [0, 1]; in bands of
    :data:`fusecli.io.raw.BAND_ROWS` rows, every plane's rows into one band of the mosaic: the scaled
    rows stay in the caches, and no full-size float copy of the mosaic is made."""
    _, h, w = planes.shape
    mosaic = np.empty((2 * h, 2 * w), dtype)
    scratch = np.empty((BAND_ROWS, w), np.float32)
    top = 65535.0 if dtype == np.uint16 else 1.0
    sites = cfa_offsets(cfa)
    for y in range(0, h, BAND_ROWS):
        n = min(BAND_ROWS, h - y)
        band, rows = mosaic[2 * y : 2 * (y + n)], scratch[:n]
        for plane, (dy, dx) in zip(planes, sites):
            np.multiply(plane[y : y + n], np.float32(top * scale), out=rows)
            if dtype == np.uint16:
                np.rint(rows, out=rows)
            np.clip(rows, 0, top, out=rows)
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


def write_picture(path: Path, rgb: np.ndarray, ext: str, tagging: Tagging | None = None, quality: int = 95) -> None:
    """(H, W, 3 or 1) float [0, 1] (already encoded), or uint8 -> 8-bit JPEG/PNG (Pillow) or 16-bit
    TIFF (tifffile), atomically, carrying ``tagging``'s metadata and profile when given."""
    with atomic_path(path) as tmp:
        if ext == ".tif":
            data = _quantise(rgb, np.uint16)
            photometric = "rgb" if data.shape[-1] == 3 else "minisblack"
            tags: dict = {}
            if tagging is not None:
                capture = tagging.capture
                extra = sorted(tiff_tags(capture, software=tagging.software, description=tagging.description))
                tags = {"iccprofile": tagging.icc, "extratags": extra, "datetime": capture.timestamp, "software": False}
            tifffile.imwrite(tmp, data.squeeze(), photometric=photometric, metadata=None, **tags)
            if tagging is not None:
                append_sub_ifds(tmp, tagging.capture, tagging.colour_space)
            return
        data = rgb if rgb.dtype == np.uint8 else _quantise(rgb, np.uint8)
        picture = Image.fromarray(data.squeeze(-1) if data.shape[-1] == 1 else data)
        kwargs: dict = {"quality": quality} if ext == ".jpg" else {}
        if tagging is not None:
            exif = pillow_exif(
                tagging.capture,
                software=tagging.software,
                description=tagging.description,
                colour_space=tagging.colour_space,
                size=picture.size,
                jpeg=ext == ".jpg",
            )
            kwargs.update(exif=exif.tobytes(), icc_profile=tagging.icc)
            if tagging.capture.xmp and ext == ".jpg":
                kwargs["xmp"] = tagging.capture.xmp
            elif tagging.capture.xmp:
                info = PngImagePlugin.PngInfo()
                info.add_itxt("XML:com.adobe.xmp", tagging.capture.xmp.decode(errors="replace"))
                kwargs["pnginfo"] = info
        try:
            picture.save(tmp, format="JPEG" if ext == ".jpg" else "PNG", **kwargs)
        except (OSError, ValueError) as e:
            raise FuseError(f"{path}: cannot encode the image ({e})") from None


def write_outputs(
    stack: Stack,
    source: StackSource,
    fused: np.ndarray,
    weights: np.ndarray | None,
    *,
    options: OutputOptions,
    paths: Sequence[Path],
    only: Sequence[Path] | None = None,
    merged: tuple[np.ndarray, Sequence[float]] | None = None,
) -> None:
    """Write one stack's outputs to ``paths`` (as :func:`output_paths` gives them), each atomically;
    ``only``: just these of them (the others exist already).

    fused (C, H, W) [0, 1] in the frames' domain, or None where :func:`needs` says no output needs
    it; weights (K, Cw, H, W) or None; merged: the scene-linear merge ((C, H, W) >= 0, 1 = the
    reference frame's white) and the exposure ratios it used, or None likewise."""
    formats = formats_for(source, options)
    wanted = set(paths if only is None else only)
    capture = capture_of(stack.infos[0])
    software, description = f"fusecli {__version__}", fusion_note(stack)
    pictures: dict[bool, tuple[np.ndarray, Tagging]] = {}  # linear or not -> (H, W, C) encoded, tagging
    for fmt, path in zip(formats, paths):
        if path not in wanted:
            continue
        if fmt == "dng" and options.dng == "linear":
            _write_linear_dng(path, stack, merged, capture, software=software, note=description)
            continue
        if fmt == "dng":
            camera = dataclasses.replace(stack.camera, black_level=(0.0,) * 4, white_level=65535.0)
            mosaic = to_mosaic(fused, camera.cfa)
            preview = dng_preview(fused, stack.camera)
            write_dng(path, mosaic, camera, capture, software=software, description=description, preview=preview)
            continue
        if fmt == "exr":
            write_exr(path, *_scene_rgb(stack, merged[0]), exr_attributes(capture, description))
            continue
        linear = options.linear and fmt == "tiff"
        if linear not in pictures:
            scene = merged[0] if merged is not None and stack.kind == "raw" else None
            pictures[linear] = _picture(stack, fused, linear, Tagging(capture, software, description), scene)
        rgb, tagging = pictures[linear]
        write_picture(path, rgb, SUFFIX[fmt], tagging, options.quality)
    if options.save_weights and paths[-1] in wanted:
        write_picture(paths[-1], weight_map(weights), ".png")


def _write_linear_dng(
    path: Path, stack: Stack, merged: tuple[np.ndarray, Sequence[float]], capture: Capture, *, software: str, note: str
) -> None:
    """The scene-linear DNG: the merge as 16-bit floats in the darkest frame's units (1 = its white,
    so nothing the bracket held is above the white level a raw developer clips at), BaselineExposure
    raising it back to the reference frame's brightness, and the darkest frame's exposure time (the
    one those units stand for)."""
    values, used = merged
    darkest = float(used[-1])
    mosaic = to_mosaic(values, stack.camera.cfa, np.float16, scale=darkest)
    camera = dataclasses.replace(stack.camera, black_level=(0.0,) * 4, white_level=1.0)
    if stack.infos[-1].exposure_time:
        capture = capture.with_exposure_time(stack.infos[-1].exposure_time)
    preview = dng_preview(values, stack.camera)
    write_dng(
        path,
        mosaic,
        camera,
        capture,
        software=software,
        description=note,
        preview=preview,
        baseline_exposure=-math.log2(darkest),
    )


def _scene_rgb(stack: Stack, values: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """The merge as the EXR holds it -> ((H, W, 3 or 1) linear, 1 = the reference frame's white,
    the chromaticities): RAW demosaiced, white balanced and in Rec. 709 primaries; RGB converted from
    the stack's primaries into Rec. 709; mono as it is (Y)."""
    if stack.kind == "raw":
        return develop_scene(values, stack.camera), REC709
    space = stack.space or icc.linear_srgb()
    m = icc.matrix(space, icc.linear_srgb())
    if m is not None:
        values = np.einsum("ij,jhw->ihw", m, values)
    return np.moveaxis(np.maximum(values, 0), 0, -1), REC709


def _picture(
    stack: Stack, fused: np.ndarray, linear: bool, tagging: Tagging, scene: np.ndarray | None = None
) -> tuple[np.ndarray, Tagging]:
    """A fused stack as a TIFF, JPEG or PNG holds it -> ((H, W, C) encoded [0, 1], upright; the
    tagging with its profile): RAW developed to sRGB (linear sRGB when ``linear``), with the colour
    of the scene-linear merge ``scene`` where given (:func:`fusecli.develop.render_raw`); RGB and mono
    in the stack's colour space, through its curve (linear light with a linear profile when
    ``linear`` or when the frames were linear)."""
    if stack.kind == "raw":
        space = icc.linear_srgb() if linear else icc.srgb()
        rgb = render_raw(fused, stack.camera, linear=linear, scene=scene)
    else:
        space = stack.space or icc.srgb()
        if linear and not space.linear:
            space = space.with_curve(icc.LINEAR, f"{space.name} (linear)")
        rgb = np.moveaxis(fused if space.linear else _encoded(fused, space), 0, -1)
    profile = space.icc or icc.profile(space)
    return rgb, dataclasses.replace(tagging, icc=profile, colour_space=1 if space.is_srgb else 0xFFFF)


def _encoded(chw: np.ndarray, space: icc.ColourSpace) -> np.ndarray:
    """(C, H, W) linear [0, 1] through ``space``'s curve, in bands of rows (a band's temporaries, not
    the image's) -> a new (C, H, W) float32 array."""
    out = np.empty(chw.shape, np.float32)
    for y in range(0, chw.shape[1], 256):
        out[:, y : y + 256] = space.from_linear(chw[:, y : y + 256])
    return out


def capture_of(info: FrameInfo) -> Capture:
    """What an output carries of its reference frame: the file's own tags, and where the file has
    none, what fusecli read of it (an exposure list's time, LibRaw's values)."""
    found = read_capture(info.path)
    basics = Capture.shot(info.exposure_time, info.aperture, info.iso, info.timestamp)
    return dataclasses.replace(found, exif={**basics.exif, **found.exif})


def fusion_note(stack: Stack) -> str:
    """The ImageDescription of an output: how many frames were fused, and their exposures."""
    times = [i.exposure_time for i in stack.infos]
    if all(times):
        shots = ", ".join(f"1/{round(1 / t)} s" if t < 1 else f"{t:g} s" for t in times)
    else:
        shots = "exposures " + ", ".join(f"{r:.3g}" for r in stack.ratios)
    return f"Fused by fusecli {__version__} from {len(stack.infos)} frames: {shots}"


def remove_stale_parts(out_dir: Path, own: bool = False) -> int:
    """Remove the temporaries that runs no longer alive left in ``out_dir`` (another live run's files
    in progress are kept; ``own=True`` also removes this process's own): see
    :func:`fusecli.io.common.remove_stale_parts`."""
    return common.remove_stale_parts(out_dir, own=own)
