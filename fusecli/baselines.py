"""Classical fusions that fusecli's network is measured against.

- :func:`mertens`: OpenCV's MergeMertens (Mertens, Kautz, Van Reeth 2007) on the same frames. It
  accepts 1 or 3 channels and its well-exposedness measure (a Gaussian around 0.5) assumes
  display-referred values, so each frame is sRGB-encoded first and the result decoded back to
  linear. Packed RAW (C = 4, or any C other than 3) is fused plane by plane (per-channel weights);
  RGB stacks are fused as 3-channel images. OpenCV converts every input with a 1/255 scale whatever
  its type, so float frames are passed on the 0..255 scale; on single planes the saturation measure
  (spread across channels) is meaningless and is given weight 0.
- :func:`best_single`: the single frame closest to the label (lowest L1): an oracle choice, the
  strongest single-exposure baseline. Without a label, :func:`best_exposed` picks the frame with the
  most well-exposed pixels instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from fusecli.colour import linear_to_srgb, srgb_to_linear


def mertens(frames: np.ndarray) -> np.ndarray:
    """MergeMertens with OpenCV's default weights. frames (K, C, H, W) linear [0, 1] -> (C, H, W) linear [0, 1]."""
    encoded = linear_to_srgb(frames) * np.float32(255.0)
    if frames.shape[1] == 3:
        fused = cv2.createMergeMertens().process([np.ascontiguousarray(np.moveaxis(f, 0, -1)) for f in encoded])
        out = np.moveaxis(fused, -1, 0)
    else:
        merge = cv2.createMergeMertens(1.0, 0.0, 1.0)  # contrast, saturation, well-exposedness
        out = np.stack([merge.process([np.ascontiguousarray(f[c]) for f in encoded]) for c in range(frames.shape[1])])
    return srgb_to_linear(np.clip(out, 0.0, 1.0))


def best_single(frames: np.ndarray, label: np.ndarray) -> tuple[int, np.ndarray]:
    """The frame with the lowest mean absolute error to the label. frames (K, C, H, W), label (C, H, W)
    -> (index, frame (C, H, W))."""
    errors = [float(np.abs(f - label).mean()) for f in frames]
    k = int(np.argmin(errors))
    return k, frames[k]


def best_exposed(frames: np.ndarray, low: float = 0.02, high: float = 0.95) -> int:
    """The frame with the most pixels neither clipped (any channel >= ``high``) nor in the noise floor
    (every channel < ``low``); ties go to the brighter frame. frames (K, C, H, W) [0, 1] -> index."""
    good = [float(((f.max(axis=0) < high) & (f.max(axis=0) >= low)).mean()) for f in frames]
    return int(np.argmax(good))
