"""Read time of a 24 MP Bayer DNG: fusecli's read_raw (decode + pack + normalise) against rawpy's bare
decode (open + unpack + a copy of the visible mosaic), and the header-only probe discovery uses.

    python bench/bench_read.py [--megapixels 24] [--repeat 5]

The DNG is synthesised into a temporary folder (uncompressed 14-bit, as many cameras' DNGs are).

Results: bench/results/read.json.
"""

import argparse
import tempfile
from pathlib import Path

import common
import numpy as np
import rawpy

from fusecli.io.dng import write_dng
from fusecli.io.metadata import Capture
from fusecli.io.raw import CameraInfo, probe_raw, read_raw
from fusecli.runtime import keep_freed_memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    keep_freed_memory()
    h = int(round((a.megapixels * 1e6 / 1.5) ** 0.5 / 2)) * 2
    w = int(round(h * 1.5 / 2)) * 2
    print(common.describe())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.dng"
        mosaic = np.random.default_rng(0).integers(2048, 16000, (h, w)).astype(np.uint16)
        cam = CameraInfo("fusecli", "bench", "RGGB", (2048.0,) * 4, 16383.0, (2.0, 1.0, 1.5), None)
        write_dng(path, mosaic, cam, Capture.shot(time=1 / 100))
        size_mb = path.stat().st_size / 1e6

        def rawpy_only():
            with rawpy.imread(str(path)) as raw:
                raw.raw_image_visible.copy()

        t_rawpy = common.median_seconds(rawpy_only, a.repeat)
        t_fusecli = common.median_seconds(lambda: read_raw(path), a.repeat)
        t_probe = common.median_seconds(lambda: probe_raw(path), a.repeat)
    print(f"DNG {w}x{h} ({w * h / 1e6:.1f} MP, {size_mb:.0f} MB, uncompressed 16-bit container), median of {a.repeat}")
    print(f"{'step':<44}{'seconds':>9}")
    print(f"{'rawpy open + unpack + copy of the mosaic':<44}{t_rawpy:>9.3f}")
    print(f"{'fusecli read_raw (+ pack, black/white, clip)':<44}{t_fusecli:>9.3f}")
    print(f"{'fusecli probe_raw (header only, discovery)':<44}{t_probe:>9.3f}")
    print(f"read_raw / rawpy: {t_fusecli / t_rawpy:.2f}x")
    common.record(
        "read",
        {"megapixels": w * h / 1e6, "rawpy_s": t_rawpy, "read_raw_s": t_fusecli, "probe_raw_s": t_probe},
        [
            common.headline(
                f"read a {w * h / 1e6:.0f} MP DNG into packed planes vs rawpy's decode",
                round(t_fusecli / t_rawpy, 2),
                "x rawpy",
            )
        ],
    )


if __name__ == "__main__":
    main()
