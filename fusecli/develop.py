"""Developing images for people: the sRGB curves, camera RGB to sRGB, demosaicing packed RAW
planes, orientation, previews and weight maps. The writers (:mod:`fusecli.outputs`), scoring
(:mod:`fusecli.evaluate`) and contact sheets (:mod:`fusecli.report`) all develop through here, so a
picture looks the same in every one of them.

Everything works on NumPy arrays; the network's differentiable curves are
:func:`fusecli.blend.srgb_encode` and :func:`fusecli.blend.srgb_decode`, with the same constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fusecli.io.raw import CameraInfo, cfa_offsets, unpack_bayer

if TYPE_CHECKING:
    from fusecli.stack import Stack

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


#: Rec. 709 luminance of linear sRGB.
_LUMA709 = (0.2126, 0.7152, 0.0722)
#: Linear Rec.709/sRGB -> XYZ (D65).
RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float64,
)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer (IEC 61966-2-1). x: any shape, in [0, 1] -> same shape, linear [0, 1]."""
    x = np.asarray(x, dtype=np.float32)
    low = x <= 0.04045
    out = x + np.float32(0.055)  # the one full-size temporary: the rest is done in place
    out /= np.float32(1.055)
    np.power(out, np.float32(2.4), out=out)
    out[low] = x[low] / np.float32(12.92)
    return out


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer. x: any shape, linear [0, 1] -> same shape, sRGB-encoded [0, 1]."""
    out = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)  # the one full-size temporary
    low = out <= 0.0031308
    dark = out[low] * np.float32(12.92)
    np.power(out, np.float32(1 / 2.4), out=out)
    out *= np.float32(1.055)
    out -= np.float32(0.055)
    out[low] = dark
    return out


def camera_to_srgb(color_matrix) -> np.ndarray:
    """3x3 matrix from white-balanced camera RGB to linear sRGB (dcraw's construction: rows of
    camera-from-sRGB normalised to 1, so a neutral stays neutral, then inverted).

    color_matrix: the DNG ColorMatrix (XYZ -> camera, 9 numbers) or None (identity)."""
    if color_matrix is None:
        return np.eye(3, dtype=np.float32)
    cam_from_rgb = np.asarray(color_matrix, np.float64).reshape(3, 3) @ RGB_TO_XYZ
    cam_from_rgb /= cam_from_rgb.sum(axis=1, keepdims=True)
    return np.linalg.inv(cam_from_rgb).astype(np.float32)


def balance(rgb: np.ndarray, white_balance, color_matrix) -> np.ndarray:
    """Camera RGB (..., 3) linear [0, 1] -> linear sRGB (..., 3) [0, 1]: white balance, then clip
    to the sensor's range (dcraw's default highlight clipping: a pixel clipped in every channel
    becomes white, not the magenta that the white-balance gains would make of it), then the camera
    matrix."""
    balanced = np.clip(rgb * np.asarray(white_balance, np.float32), 0, 1)
    return np.clip(balanced @ camera_to_srgb(color_matrix).T, 0, 1)


def develop(rgb: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Camera RGB (..., 3) linear [0, 1] -> linear sRGB [0, 1] with ``camera``'s white balance and
    matrix (:func:`balance`)."""
    return balance(rgb, camera.white_balance, camera.color_matrix)


def render_raw(
    planes: np.ndarray, camera: CameraInfo, linear: bool = False, scene: np.ndarray | None = None
) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (2h, 2w, 3) float32 sRGB (or linear sRGB) [0, 1], upright.

    ``scene``: the same stack's scene-linear merge (4, h, w) >= 0 (:mod:`fusecli.merge`). Given, each
    pixel keeps the brightness (Rec. 709 luminance) the planes develop to and takes its colour from
    the scene, as a raw developer renders it: the network compresses each camera channel on its own,
    before white balance, which turns near-white highlights cream and a bright window cyan."""
    mosaic = np.round(unpack_bayer(np.clip(planes, 0, 1), camera.cfa) * 65535).astype(np.uint16)
    demosaiced = cv2.cvtColor(mosaic, _OPENCV_BAYER[camera.cfa]).astype(np.float32) / 65535
    rgb = develop(demosaiced, camera)
    if scene is not None:
        rgb = _with_colour_of(rgb, scene, camera)
    return orient(rgb if linear else linear_to_srgb(rgb), camera.orientation)


def _with_colour_of(rgb: np.ndarray, scene: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """(2h, 2w, 3) linear sRGB [0, 1] with the chromaticity of ``scene`` (4, h, w) developed at half
    resolution (colour varies slowly; the planes keep the detail) -> (2h, 2w, 3) [0, 1]; a pixel
    the new colour would take above 1 is scaled down whole, so its hue stays."""
    half = develop_half(scene, camera, clip=False)
    luma = half @ np.asarray(_LUMA709, np.float32)
    chroma = half / np.maximum(luma, np.float32(1e-6))[..., None]
    chroma = cv2.resize(chroma, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    out = chroma * (rgb @ np.asarray(_LUMA709, np.float32))[..., None]
    np.maximum(out, 0, out=out)
    out /= np.maximum(out.max(axis=-1, keepdims=True), np.float32(1))
    return out


def demosaic_linear(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Packed planes (4, h, w) float32, any range -> (2h, 2w, 3) camera RGB: bilinear interpolation
    of each colour from its photosites, in floating point (scene-linear values above 1 kept)."""
    mosaic = unpack_bayer(planes.astype(np.float32, copy=False), cfa)
    h, w = mosaic.shape
    out = np.empty((h, w, 3), np.float32)
    sites = cfa_offsets(cfa)
    cross = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
    box = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
    for channel, planes_of, kernel in ((0, (0,), box), (1, (1, 2), cross), (2, (3,), box)):
        sparse = np.zeros_like(mosaic)
        for p in planes_of:
            dy, dx = sites[p]
            sparse[dy::2, dx::2] = mosaic[dy::2, dx::2]
        out[..., channel] = cv2.filter2D(sparse, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out


def develop_scene(planes: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Scene-linear packed planes (4, h, w) >= 0 -> (2h, 2w, 3) float32 linear sRGB (Rec. 709
    primaries, D65) >= 0, upright: demosaiced in floating point, white balanced, the camera matrix;
    nothing clipped above (what the EXR holds)."""
    return orient(_balance_scene(demosaic_linear(planes, camera.cfa), camera), camera.orientation)


def _balance_scene(rgb: np.ndarray, camera: CameraInfo) -> np.ndarray:
    """Scene-linear camera RGB (..., 3) >= 0 -> linear sRGB (..., 3) >= 0: :func:`balance` without
    clipping above (white balance, then the camera matrix)."""
    out = (rgb * np.asarray(camera.white_balance, np.float32)) @ camera_to_srgb(camera.color_matrix).T
    return np.maximum(out, 0, out=out)


def display(chw: np.ndarray, stack: Stack) -> np.ndarray:
    """What a viewer shows of (C, H, W) linear [0, 1] in a stack's domain -> (H', W', 3 or 1) float32
    display-referred [0, 1], upright: RAW developed as the TIFF/JPEG outputs are (demosaic, white
    balance, camera matrix, sRGB curve); RGB and mono through the curve of the stack's colour space,
    as the outputs store them (for frames decoded from files, the values as stored), linear stacks
    through the sRGB curve."""
    if stack.kind == "raw" and stack.camera is not None:
        return render_raw(chw, stack.camera)
    if stack.space is not None and not stack.space.linear:
        return np.moveaxis(stack.space.from_linear(chw), 0, -1)
    return linear_to_srgb(np.moveaxis(chw, 0, -1))


def develop_half(planes: np.ndarray, camera: CameraInfo, clip: bool = True) -> np.ndarray:
    """Packed planes (4, h, w) [0, 1] -> (h, w, 3) linear sRGB [0, 1] at half resolution (R, mean
    of the greens, B: no demosaic), unrotated: for previews and contact sheets. ``clip=False``:
    scene-linear planes, any range >= 0, developed without clipping."""
    rgb = np.stack([planes[0], 0.5 * (planes[1] + planes[2]), planes[3]], axis=-1)
    return develop(rgb, camera) if clip else _balance_scene(rgb, camera)


def dng_preview(planes: np.ndarray, camera: CameraInfo, side: int = 1024) -> np.ndarray:
    """A small sRGB picture of packed planes (4, h, w) [0, 1] (scene-linear ones above 1 too: they
    clip at white) for the DNG's preview -> (h', w', 3) uint8, longest side at most ``side``, stored
    unrotated (the DNG's orientation tag applies to it). The planes are shrunk before they are
    developed, which is cheaper and differs only where averaging and clipping do not commute, in
    clipped highlights."""
    _, h, w = planes.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        planes = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in planes])
    return np.round(linear_to_srgb(develop_half(planes, camera)) * 255).astype(np.uint8)


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


def display_rgb(chw: np.ndarray, stack: Stack) -> np.ndarray:
    """(C, H, W) linear [0, 1] in the stack's domain -> (H', W', 3) float32 sRGB [0, 1], upright."""
    if stack.kind == "raw" and stack.camera is not None:
        return orient(linear_to_srgb(develop_half(chw, stack.camera)), stack.camera.orientation)
    hwc = np.moveaxis(chw, 0, -1)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    return linear_to_srgb(np.clip(hwc[..., :3], 0, 1))
