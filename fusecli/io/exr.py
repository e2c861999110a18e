"""Writing scene-linear OpenEXR files (the OpenEXR package): half-float RGB or Y, ZIP-compressed,
with the chromaticities of their primaries and the shot's standard attributes (capDate, expTime,
aperture, isoSpeed, owner, latitude/longitude, comments), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fusecli.io.common import atomic_path


def write_exr(path: Path, image: np.ndarray, chromaticities: tuple[float, ...], attributes: dict | None = None) -> None:
    """(H, W, 3) or (H, W, 1) float, linear, any range >= 0 -> half-float EXR (RGB or Y).
    chromaticities: (rx, ry, gx, gy, bx, by, wx, wy) of the primaries and white point."""
    import OpenEXR

    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"expected (H, W, 3) or (H, W, 1), got {image.shape}")
    half = np.ascontiguousarray(np.clip(image, 0, 65504).astype(np.float16))
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header["chromaticities"] = tuple(float(v) for v in chromaticities)
    header.update(attributes or {})
    channels = {"RGB": half} if half.shape[-1] == 3 else {"Y": half[..., 0]}
    with atomic_path(Path(path)) as tmp:
        with OpenEXR.File(header, channels) as f:
            f.write(str(tmp))
