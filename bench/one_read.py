"""What registration and deghosting cost to read a frame: the full-resolution reads each made of its
own (registration's brightness and clip map at up to 1024 px, ``align._shrink``; deghosting's 4x4
channel means and clip blocks) against the one read both now share (``align.half_summary``), and
the intensity mapping's 64 quantiles by ``np.quantile`` against one sort (``deghost._quantiles``).

    python bench/one_read.py [--megapixels 12] [--repeat 5]

The frame is the brightest of bench_mertens.py's synthesised 3-frame stack (RGB float32).
"""

import argparse

import common
import cv2
import numpy as np
from bench_mertens import stack

from fusecli import align
from fusecli.deghost import _quantiles
from fusecli.runtime import keep_freed_memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    keep_freed_memory()
    print(common.describe())
    frames = stack(a.megapixels)
    frame = frames[0]
    h, w = frame.shape[-2:]
    size = align.registration_size(h, w)
    small = (w // 4, h // 4)

    def deghost_blocks() -> None:  # what deghosting read of each frame before
        [cv2.resize(p, small, interpolation=cv2.INTER_AREA) for p in frame]
        cv2.resize((frame.max(axis=0) < align.CLIP).astype(np.float32), small, interpolation=cv2.INTER_AREA)

    blocks = cv2.resize(frame[0], small, interpolation=cv2.INTER_AREA).ravel()
    q = np.linspace(0.0, 1.0, 64)
    rows = [
        ("registration's read (align._shrink)", common.median_seconds(lambda: align._shrink(frame, size), a.repeat)),
        ("deghosting's read (4x4 means, clip blocks)", common.median_seconds(deghost_blocks, a.repeat)),
        ("the shared read (align.half_summary)", common.median_seconds(lambda: align.half_summary(frame), a.repeat)),
        (
            f"np.quantile, 64 of {blocks.size} block means",
            common.median_seconds(lambda: np.quantile(blocks, q), a.repeat),
        ),
        ("the same from one sort (deghost._quantiles)", common.median_seconds(lambda: _quantiles(blocks, q), a.repeat)),
    ]
    print(f"one {h * w / 1e6:.1f} MP RGB float32 frame; ms, median of {a.repeat}")
    for name, seconds in rows:
        print(f"  {name:<46}{seconds * 1e3:>8.1f}")


if __name__ == "__main__":
    main()
