"""Colour: the sRGB transfer curves, RGB -> XYZ, and developing camera RGB to sRGB.

This module imports no other fusecli module; everything that encodes, decodes or develops colour
takes its constants and curves from here.
"""

from __future__ import annotations

import numpy as np

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


def develop(rgb: np.ndarray, white_balance, color_matrix) -> np.ndarray:
    """Camera RGB (..., 3) linear [0, 1] -> linear sRGB (..., 3) [0, 1]: white balance, then clip
    to the sensor's range (dcraw's default highlight clipping: a pixel clipped in every channel
    becomes white, not the magenta that the white-balance gains would make of it), then the camera
    matrix."""
    balanced = np.clip(rgb * np.asarray(white_balance, np.float32), 0, 1)
    return np.clip(balanced @ camera_to_srgb(color_matrix).T, 0, 1)
