"""Fusing stacks and writing the results: DNG for RAW, 16-bit TIFF, JPEG/PNG previews, weight maps.

Nothing is ever destroyed: every output is written to a hidden temporary name beside it and renamed
(a killed run leaves at most ``.NAME.*.part`` files, which the next run into that folder removes); an
existing output is skipped unless ``overwrite``; an output that would replace one of the stack's
inputs is refused. One bad stack does not stop the others: each gets a result (fused, skipped or
failed with its reason). The next stack is decoded while the current one is fused.

Outputs of a RAW stack: ``dng`` (the fused mosaic in the source's Bayer phase, 16-bit with black 0
and white 65535, the camera's make/model, colour matrix, white balance and orientation, and the
reference frame's exposure), ``tiff`` (16-bit RGB: OpenCV demosaic, camera white balance, camera
matrix to sRGB, sRGB curve; linear with ``linear=True``), ``jpg``/``png`` (8-bit sRGB previews). Of
an RGB or mono stack: ``tiff`` (16-bit), ``png``, ``jpg``, in the transfer the input had.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import tifffile
import torch

from fusecli import align
from fusecli.errors import FuseError
from fusecli.io.common import atomic_path
from fusecli.io.dng import Exposure, write_dng
from fusecli.io.image import linear_to_srgb
from fusecli.io.raw import CameraInfo, cfa_offsets, unpack_bayer
from fusecli.model import FuseNet
from fusecli.stack import Stack, StackSource, load_stack

RAW_FORMATS = ("dng", "tiff", "jpg", "png")
RGB_FORMATS = ("tiff", "jpg", "png")
_SUFFIX = {"dng": ".dng", "tiff": ".tif", "jpg": ".jpg", "png": ".png"}
_OPENCV_BAYER = {"RGGB": cv2.COLOR_BayerBG2RGB, "BGGR": cv2.COLOR_BayerRG2RGB, "GRBG": cv2.COLOR_BayerGB2RGB, "GBRG": cv2.COLOR_BayerGR2RGB}
# Okabe-Ito colours for the weight maps: frame 0 (the 1/1 reference) first.
_PALETTE = np.array([[240, 228, 66], [0, 114, 178], [213, 94, 0], [0, 158, 115], [204, 121, 167], [86, 180, 233], [230, 159, 0]], np.float32) / 255


@dataclass
class FuseOptions:
    formats: tuple[str, ...] | None = None  # None: dng for RAW stacks, tiff for the others
    linear: bool = False
    overwrite: bool = False
    save_weights: bool = False
    ratios: Sequence[float] | None = None
    transfer: str = "auto"
    max_memory: float = 0.25  # GiB for the full-resolution temporaries; larger stacks are fused in bands of rows
    align: str = "translation"  # none, translation or homography (fusecli.align)
    deghost: bool = True


@dataclass
class Result:
    """What happened to one stack (the summary's row)."""

    stack: str
    status: str  # "fused", "skipped", "failed" or "planned" (dry run)
    outputs: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0
    megapixels: float = 0.0
    motion: list[dict] = field(default_factory=list)  # per frame: fusecli.align.FrameMotion as a dict
    warnings: list[str] = field(default_factory=list)


def formats_for(source: StackSource, options: FuseOptions) -> tuple[str, ...]:
    allowed = RAW_FORMATS if source.kind == "raw" else RGB_FORMATS
    formats = options.formats or (("dng",) if source.kind == "raw" else ("tiff",))
    bad = [f for f in formats if f not in allowed]
    if bad:
        raise FuseError(f"stack {source.name}: format {', '.join(bad)} is not available for {source.kind} stacks (choose from {', '.join(allowed)})")
    return tuple(formats)


def output_paths(source: StackSource, out_dir: Path, options: FuseOptions) -> list[Path]:
    """Where a stack's outputs go: OUT/<stack name>_fused.<ext> (+ _weights.png)."""
    paths = [out_dir / f"{source.name}_fused{_SUFFIX[f]}" for f in formats_for(source, options)]
    if options.save_weights:
        paths.append(out_dir / f"{source.name}_weights.png")
    return paths


def band_rows(shape: Sequence[int], weight_channels: int, max_memory_gib: float) -> int:
    """Rows per band so that the full-resolution temporaries of a (K, C, H, W) stack fit the budget:
    per row about (4 K Cw + C + K) float32 maps of width W (logits, weights, A and b upsampled, fused,
    guide)."""
    k, c, _, width = shape
    per_row = 4 * width * (4 * k * weight_channels + c + k)
    return max(16, int(max_memory_gib * 2**30 // per_row))


@torch.inference_mode()
def fuse_stack(model: FuseNet, stack: Stack, device: torch.device, max_memory_gib: float = 0.25, keep_weights: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the model on one stack -> fused (C, H, W) float32 [0, 1] and weights (K, 1 or C, H, W)
    (None unless ``keep_weights``). Stacks whose temporaries exceed ``max_memory_gib`` go in bands
    of rows, with the same result."""
    frames = torch.from_numpy(stack.frames)[None].to(device)
    ratios = torch.tensor(stack.ratios, dtype=torch.float32)[None].to(device)
    rows = band_rows(stack.frames.shape, model.config.weight_channels(stack.frames.shape[1]), max_memory_gib)
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused, weights = model(frames, ratios, band_rows=rows, keep_weights=keep_weights)
    else:
        fused, weights = model(frames, ratios, band_rows=rows, keep_weights=keep_weights)
    out = fused[0].float().clamp_(0, 1).cpu().numpy()
    return out, (weights[0].float().cpu().numpy() if weights is not None else None)


def camera_to_srgb(camera: CameraInfo) -> np.ndarray:
    """3x3 matrix from white-balanced camera RGB to linear sRGB (dcraw's construction: rows of
    camera-from-sRGB normalised to 1, so a neutral stays neutral, then inverted)."""
    if camera.color_matrix is None:
        return np.eye(3, dtype=np.float32)
    from fusecli.synth import RGB_TO_XYZ

    cam_from_rgb = np.asarray(camera.color_matrix, np.float64).reshape(3, 3) @ RGB_TO_XYZ
    cam_from_rgb /= cam_from_rgb.sum(axis=1, keepdims=True)
    return np.linalg.inv(cam_from_rgb).astype(np.float32)


def develop(rgb: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Camera RGB (..., 3) linear [0, 1] -> linear sRGB [0, 1]: camera white balance, then clip to
    the sensor's range (dcraw's default highlight clipping: a pixel clipped in every channel
    becomes white, not the magenta that the white-balance gains would make of it), then the camera
    matrix."""
    balanced = np.clip(rgb * np.asarray(camera.white_balance, np.float32), 0, 1)
    return np.clip(balanced @ camera_to_srgb(camera).T, 0, 1)


def render_raw(planes: np.ndarray, camera: CameraInfo, linear: bool = False) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w, 3) float32 sRGB (or linear sRGB) [0, 1], upright."""
    mosaic = np.round(unpack_bayer(np.clip(planes, 0, 1), camera.cfa) * 65535).astype(np.uint16)
    rgb = develop(cv2.cvtColor(mosaic, _OPENCV_BAYER[camera.cfa]).astype(np.float32) / 65535, camera)
    return orient(rgb if linear else linear_to_srgb(rgb), camera.orientation)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, ...) image."""
    ops = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](image)) if orientation in ops else image


def weight_map(weights: np.ndarray) -> np.ndarray:
    """(K, Cw, H, W) weights -> (H, W, 3) uint8: each pixel coloured by the frames it came from."""
    w = weights.mean(axis=1)  # per-channel weights: their mean per frame
    colours = np.concatenate([_PALETTE] * (w.shape[0] // len(_PALETTE) + 1))[: w.shape[0]]
    rgb = np.einsum("khw,kc->hwc", w, colours)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def to_mosaic16(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w) uint16 Bayer mosaic (white 65535), one plane at a
    time (a 50 MP stack's float mosaic and its rounded copies cost 600 MB otherwise)."""
    _, h, w = planes.shape
    mosaic = np.empty((2 * h, 2 * w), np.uint16)
    scratch = np.empty((h, w), np.float32)
    for plane, (dy, dx) in zip(planes, cfa_offsets(cfa)):
        np.multiply(plane, np.float32(65535), out=scratch)
        np.rint(scratch, out=scratch)
        np.clip(scratch, 0, 65535, out=scratch)
        mosaic[dy::2, dx::2] = scratch
    return mosaic


def write_picture(path: Path, rgb: np.ndarray, ext: str) -> None:
    """(H, W, 3 or 1) float [0, 1] (already in its transfer) -> 8-bit JPEG/PNG or 16-bit TIFF."""
    with atomic_path(path) as tmp:
        if ext == ".tif":
            data = np.round(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)
            tifffile.imwrite(tmp, data.squeeze(), photometric="rgb" if data.shape[-1] == 3 else "minisblack", metadata=None)
        else:
            data = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
            bgr = data[..., ::-1] if data.shape[-1] == 3 else data
            ok, encoded = cv2.imencode(ext, bgr, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
            if not ok:
                raise FuseError(f"{path}: OpenCV could not encode the image")
            tmp.write_bytes(encoded.tobytes())


def write_outputs(stack: Stack, source: StackSource, fused: np.ndarray, weights: np.ndarray | None, options: FuseOptions, paths: Sequence[Path]) -> None:
    """Write one stack's outputs to ``paths`` (as :func:`output_paths` gives them), each atomically."""
    formats = formats_for(source, options)
    picture = None
    for fmt, path in zip(formats, paths):
        if fmt == "dng":
            camera = dataclasses.replace(stack.camera, black_level=(0.0,) * 4, white_level=65535.0)
            mosaic = to_mosaic16(fused, camera.cfa)
            ref = stack.infos[0]
            write_dng(path, mosaic, camera, Exposure(ref.exposure_time, ref.aperture, ref.iso, ref.timestamp), software="fusecli fuse")
            continue
        if stack.kind == "raw":
            rgb = render_raw(fused, stack.camera, linear=options.linear and fmt == "tiff")
        else:
            if picture is None:
                chw = linear_to_srgb(fused) if stack.transfer == "srgb" else fused
                picture = np.moveaxis(chw, 0, -1)
            rgb = picture
        write_picture(path, rgb, _SUFFIX[fmt])
    if options.save_weights:
        write_picture(paths[-1], weight_map(weights).astype(np.float32) / 255, ".png")


def remove_stale_parts(out_dir: Path) -> int:
    """Remove hidden temporary outputs (``.NAME.*.part``) that a killed run left in ``out_dir``."""
    count = 0
    for p in out_dir.glob(".*_fused.*.part"):
        p.unlink(missing_ok=True)
        count += 1
    for p in out_dir.glob(".*_weights.png.*.part"):
        p.unlink(missing_ok=True)
        count += 1
    return count


def fuse_sources(
    sources: Sequence[StackSource],
    model: FuseNet,
    device: torch.device,
    out_dir: Path,
    options: FuseOptions,
    dry_run: bool = False,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Fuse every stack into ``out_dir``; decoding of the next stack overlaps fusion of this one."""
    out_dir = Path(out_dir)
    if not dry_run:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FuseError(f"{out_dir}: cannot create the output folder ({e.strerror})") from None
        remove_stale_parts(out_dir)
    results: list[Result] = []
    todo: list[tuple[StackSource, list[Path]]] = []
    for source in sources:
        try:
            paths = output_paths(source, out_dir, options)
        except FuseError as e:
            results.append(Result(source.name, "failed", reason=str(e)))
            continue
        inputs = {f.path.resolve() for f in source.frames}
        clash = [p for p in paths if p.resolve() in inputs]
        if clash:
            results.append(Result(source.name, "failed", reason=f"{clash[0]}: the output would replace an input frame"))
        elif dry_run:
            results.append(Result(source.name, "planned", [str(p) for p in paths]))
        elif not options.overwrite and all(p.exists() for p in paths):
            results.append(Result(source.name, "skipped", [str(p) for p in paths], reason="outputs exist (use --overwrite)"))
        elif not options.overwrite and any(p.exists() for p in paths):
            existing = next(p for p in paths if p.exists())
            results.append(Result(source.name, "skipped", [str(p) for p in paths], reason=f"{existing} exists (use --overwrite)"))
        else:
            todo.append((source, paths))
    for r in results:
        if on_result:
            on_result(r)
    if dry_run or not todo:
        return results

    def load(source: StackSource) -> Stack:
        stack = load_stack(source, options.ratios, options.transfer)  # type: ignore[arg-type]
        return align.prepare(stack, options.align, options.deghost)  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future = pool.submit(load, todo[0][0])
        for i, (source, paths) in enumerate(todo):
            t0 = time.perf_counter()
            try:
                stack = pending.result()
            except FuseError as e:
                stack, error = None, str(e)
            if i + 1 < len(todo):
                pending = pool.submit(load, todo[i + 1][0])
            if stack is None:
                result = Result(source.name, "failed", reason=error)
            else:
                try:
                    fused, weights = fuse_stack(model, stack, device, options.max_memory, keep_weights=options.save_weights)
                    write_outputs(stack, source, fused, weights, options, paths)
                    mp = stack.frames.shape[-1] * stack.frames.shape[-2] * (4 if stack.kind == "raw" else 1) / 1e6
                    motion = [m.to_dict() for m in stack.motion]
                    warnings = [f"{source.name}: frame {m.frame + 1} ({stack.infos[m.frame].path.name}) fused unaligned: {m.reason}" for m in stack.motion if m.status == "unaligned" and options.align != "none"]
                    result = Result(source.name, "fused", [str(p) for p in paths], seconds=time.perf_counter() - t0, megapixels=mp, motion=motion, warnings=warnings)
                except FuseError as e:
                    result = Result(source.name, "failed", reason=str(e))
                except OSError as e:
                    result = Result(source.name, "failed", reason=f"{out_dir}: cannot write ({e.strerror})")
            results.append(result)
            if on_result:
                on_result(result)
    return results
