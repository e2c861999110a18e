"""Classical fusions that fusecli's network is measured against.

Run as their users run them (README "Evaluating"): :func:`mertens_display` is OpenCV's
MergeMertens with its defaults on display-referred 8-bit frames (developed RGB for RAW stacks, the
stored values for JPEG/PNG), :func:`enfuse_display` is Debian's ``enfuse`` with its defaults on
16-bit TIFFs of the same frames. :func:`mertens` below is the older in-domain variant kept for the
raw-domain comparison (per Bayer plane for RAW: no user runs Mertens that way).

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

import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

from fusecli.colour import linear_to_srgb, srgb_to_linear
from fusecli.errors import FuseError


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


def mertens_display(frames: np.ndarray) -> np.ndarray:
    """OpenCV's MergeMertens with its default weights on 8-bit frames, as a user runs it.
    frames (K, H, W, C) display-referred [0, 1], C = 3 or 1 -> (H, W, C) display-referred [0, 1]."""
    images = [np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in frames]
    if images[0].shape[-1] == 3:
        images = [np.ascontiguousarray(i[..., ::-1]) for i in images]  # OpenCV's BGR
    else:
        images = [np.ascontiguousarray(i[..., 0]) for i in images]
    fused = cv2.createMergeMertens().process(images)
    fused = fused[..., ::-1] if fused.ndim == 3 else fused[..., None]
    return np.clip(np.ascontiguousarray(fused), 0.0, 1.0).astype(np.float32)


def enfuse_display(frames: np.ndarray) -> np.ndarray:
    """Debian's ``enfuse`` with its defaults on 16-bit TIFFs of the frames, as a user runs it.
    frames (K, H, W, C) display-referred [0, 1] -> (H, W, C) display-referred [0, 1]; a FuseError
    when enfuse is not installed or fails."""
    exe = shutil.which("enfuse")
    if exe is None:
        raise FuseError("enfuse is not installed (Debian: apt-get install enfuse)")
    with tempfile.TemporaryDirectory(prefix="fusecli-enfuse-") as tmp:
        names = []
        for k, f in enumerate(frames):
            name = Path(tmp) / f"frame{k}.tif"
            data = np.round(np.clip(f, 0, 1) * 65535).astype(np.uint16)
            tifffile.imwrite(
                name,
                data.squeeze(-1) if data.shape[-1] == 1 else data,
                photometric="rgb" if data.shape[-1] == 3 else "minisblack",
            )
            names.append(str(name))
        out = Path(tmp) / "fused.tif"
        run = subprocess.run([exe, "-o", str(out), *names], capture_output=True, text=True)
        if run.returncode != 0 or not out.is_file():
            raise FuseError(f"enfuse failed ({(run.stderr or run.stdout).strip().splitlines()[-1:]})")
        data = tifffile.imread(out)
    data = data if data.ndim == 3 else data[..., None]
    data = data[..., : frames.shape[-1]]  # enfuse adds an alpha channel: drop it
    scale = 65535.0 if data.dtype == np.uint16 else (255.0 if data.dtype == np.uint8 else 1.0)
    return np.clip(data.astype(np.float32) / scale, 0.0, 1.0)
