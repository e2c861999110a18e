"""End to end against the decoder floor: ``fuse`` on a folder of RAW (DNG) stacks, DNG out, against
reading the same files with rawpy alone; peak RSS. Targets (the speed issue): fuse <= 2x the decode time
with ``--align none``, <= 3x with alignment.

    python bench/bench_fuse.py [--stacks 10] [--megapixels 24] [--frames 3] [--repeat 3] [--no-samples] [--cli]

Stacks are synthesised (a smooth gradient scene with noise, RGGB, 14-bit, exposures 1, 1/4, ...).
"fuse" is fusecli.fuse.fuse_sources in this process with the model loaded (decode, fusion, DNG
write, the next stack decoded while this one is fused); ``--cli`` also times the whole
``fusecli fuse`` command as a new process (Python start-up, imports and model load included).
"decode" is ``rawpy.imread(f).raw_image_visible.copy()`` for every frame, one after another.
For the memory target, run the large stack alone and read the command's peak RSS:
--stacks 1 --megapixels 50 --frames 5 --repeat 1 --no-samples --cli.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import common
import numpy as np
import rawpy

from fusecli.discover import discover
from fusecli.fuse import FuseOptions, default_jobs, fuse_sources
from fusecli.io.dng import Exposure, write_dng
from fusecli.io.raw import CameraInfo
from fusecli.model import load_model
from fusecli.outputs import OutputOptions
from fusecli.runtime import keep_freed_memory, pick_device
from fusecli.stack import StackOptions

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def write_stack(folder: Path, megapixels: float, frames: int, seed: int = 0) -> None:
    h = int(round((megapixels * 1e6 / 1.5) ** 0.5 / 2)) * 2
    w = int(round(h * 1.5 / 2)) * 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = 0.02 + 3.0 * (x / w) * (y / h) + 0.05 * np.random.default_rng(seed).random((h, w), dtype=np.float32)
    cam = CameraInfo("fusecli", "bench", "RGGB", (2048.0,) * 4, 16383.0, (2.0, 1.0, 1.5), None)
    folder.mkdir(parents=True)
    for k, r in enumerate(0.25**k for k in range(frames)):
        mosaic = np.clip(np.minimum(scene * r, 1.0) * (16383 - 2048) + 2048, 0, 16383).astype(np.uint16)
        write_dng(folder / f"f{k}.dng", mosaic, cam, Exposure(time=r / 60, timestamp=datetime(2026, 1, 1, 0, 0, k)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=10)
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-samples", action="store_true")
    ap.add_argument("--cli", action="store_true", help="also time the fusecli fuse command as a new process")
    ap.add_argument("--align", default="translation", help="as fuse --align (default translation, as fuse)")
    ap.add_argument("--jobs", type=int, default=None, help="stacks opened at once, as fuse --jobs (default: as fuse)")
    a = ap.parse_args()
    keep_freed_memory()
    device = pick_device("auto")
    model = load_model(None, device)[0]
    print(common.describe())
    print(
        f"fuse --align {a.align} (deghost on), stacks opened at once: {a.jobs or 'as fuse (default_jobs)'}; median "
        f"of {a.repeat} run(s){' after one warm-up' if a.repeat > 1 else ''}; seconds per stack"
    )
    print(f"{'stacks':<36}{'fuse':>9}{'decode':>9}{'ratio':>8}   (targets: <= 2x --align none, <= 3x aligned)")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        for i in range(a.stacks):
            write_stack(big / f"stack_{i:02d}", a.megapixels, a.frames, seed=i)
        cases = [] if a.no_samples else [("samples (3 stacks, 3 x 0.2 MP)", SAMPLES)]
        for name, folder in cases + [(f"{a.stacks} x {a.megapixels:g} MP, {a.frames} frames", big)]:
            sources = discover([folder])
            jobs = a.jobs or default_jobs(sources)
            files = [f.path for s in sources for f in s.frames]
            out = Path(tmp) / "out"

            def run(sources=sources, out=out, jobs=jobs) -> None:
                options = FuseOptions(StackOptions(align=a.align), OutputOptions(overwrite=True), jobs=jobs)
                fuse_sources(sources, model, device, out, options)

            def decode(files=files) -> None:
                for f in files:
                    with rawpy.imread(str(f)) as raw:
                        raw.raw_image_visible.copy()

            warmup = 0 if a.repeat == 1 else 1
            t_fuse = common.median_seconds(run, a.repeat, warmup=warmup) / len(sources)
            t_decode = common.median_seconds(decode, a.repeat, warmup=warmup) / len(sources)
            print(f"{name:<36}{t_fuse:>9.3f}{t_decode:>9.3f}{t_fuse / t_decode:>7.2f}x   ({jobs} opened at once)")
            if a.cli and folder == big:
                env = common.child_env()
                t0 = time.perf_counter()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fusecli",
                        "fuse",
                        str(big),
                        "-o",
                        str(Path(tmp) / "cli"),
                        "--quiet",
                        "--align",
                        a.align,
                        *(["--jobs", str(a.jobs)] if a.jobs else []),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
                _, status, usage = os.wait4(proc.pid, 0)
                if status != 0:
                    sys.exit("fusecli fuse failed")
                t_cli = (time.perf_counter() - t0) / len(sources)
                print(
                    f"{'  the same, fusecli fuse command':<36}{t_cli:>9.3f}{t_decode:>9.3f}{t_cli / t_decode:>7.2f}x"
                    f"   peak RSS {usage.ru_maxrss / 2**20:.2f} GiB"
                )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
