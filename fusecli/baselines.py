"""Classical fusions that fusecli's network is measured against.

Run as their users run them (docs/evaluation.md): :func:`mertens_display` is OpenCV's
MergeMertens with its defaults on display-referred 8-bit frames (developed RGB for RAW stacks, the
stored values for JPEG/PNG), :func:`enfuse_display` is Debian's ``enfuse`` with its defaults on
16-bit TIFFs of the same frames.

OpenCV converts every input with a 1/255 scale whatever its type: frames go in as 8-bit, as users
give them.

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

from fusecli.errors import FuseError


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
