"""End-to-end `fuse` time per stack (decode + model + DNG write) against rawpy's decode of the same
files, for the bundled samples and a synthetic 24 MP 3-frame DNG stack; peak RSS of this process.

    python bench/bench_fuse.py [--megapixels 24] [--frames 3] [--repeat 3] [--no-samples]

For the memory target, run the large stack alone: --megapixels 50 --frames 5 --repeat 1 --no-samples.
"""

import argparse
import resource
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import rawpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe, median_seconds  # noqa: E402

from fusecli.fuse import FuseOptions, fuse_sources  # noqa: E402
from fusecli.io.dng import Exposure, write_dng  # noqa: E402
from fusecli.io.raw import CameraInfo  # noqa: E402
from fusecli.model import load_model  # noqa: E402
from fusecli.runtime import keep_freed_memory, pick_device  # noqa: E402
from fusecli.stack import discover  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def write_stack(folder: Path, megapixels: float, frames: int) -> None:
    h = int(round((megapixels * 1e6 / 1.5) ** 0.5 / 2)) * 2
    w = int(round(h * 1.5 / 2)) * 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = 0.02 + 3.0 * (x / w) * (y / h) + 0.05 * np.random.default_rng(0).random((h, w), dtype=np.float32)
    cam = CameraInfo("fusecli", "bench", "RGGB", (2048.0,) * 4, 16383.0, (2.0, 1.0, 1.5), None)
    folder.mkdir(parents=True)
    for k, r in enumerate(0.25**k for k in range(frames)):
        mosaic = np.clip(np.minimum(scene * r, 1.0) * (16383 - 2048) + 2048, 0, 16383).astype(np.uint16)
        write_dng(folder / f"f{k}.dng", mosaic, cam, Exposure(time=r / 60, timestamp=datetime(2026, 1, 1, 0, 0, k)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-samples", action="store_true")
    a = ap.parse_args()
    keep_freed_memory()
    device = pick_device("auto")
    model = load_model(None, device)[0]
    print(describe())
    print(f"{'stacks':<32}{'fuse s/stack':>14}{'rawpy decode s':>16}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        write_stack(big / "stack", a.megapixels, a.frames)
        cases = [] if a.no_samples else [("samples (3 x 3 x 0.2 MP)", SAMPLES)]
        for name, folder in cases + [(f"{a.megapixels:g} MP, {a.frames} frames", big)]:
            sources = discover([folder])
            files = [f.path for s in sources for f in s.frames]
            out = Path(tmp) / "out"

            def run() -> None:
                fuse_sources(sources, model, device, out, FuseOptions(overwrite=True))

            def decode() -> None:
                for f in files:
                    with rawpy.imread(str(f)) as raw:
                        raw.raw_image_visible.copy()

            t_fuse = median_seconds(run, a.repeat, warmup=0 if a.repeat == 1 else 1) / len(sources)
            t_decode = median_seconds(decode, a.repeat, warmup=0 if a.repeat == 1 else 1) / len(sources)
            print(f"{name:<32}{t_fuse:>14.3f}{t_decode:>16.3f}{t_fuse / t_decode:>7.2f}x")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
