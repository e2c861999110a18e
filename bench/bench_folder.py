"""Small photos end to end: ``fusecli fuse`` on a folder of 20 real 1 MP JPEG brackets against
OpenCV's MergeMertens in a Python loop, each as a new process (start-up and imports included), as a
user runs them. Targets: fusecli <= the Mertens loop with ``--align none``, <= 2x with the default
alignment.

    python bench/bench_folder.py [--stacks 20] [--megapixels 1] [--repeat 3] [--brackets DIR] [--jobs N]

The folder is made in a temporary directory from ``../shared/data/brackets`` by
common.write_jpeg_brackets (real brackets shot by other people, only read, never kept). The Mertens
loop reads each stack's JPEGs with cv2.imread, runs ``cv2.createMergeMertens().process`` on them
(8-bit, OpenCV's defaults) and writes an 8-bit JPEG; fusecli writes a JPEG too.

Results: bench/results/folder.json.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import cv2
import numpy as np

MERTENS_LOOP = """
import sys
from pathlib import Path

import cv2
import numpy as np

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
merge = cv2.createMergeMertens()
for stack in sorted(p for p in src.iterdir() if p.is_dir()):
    frames = [cv2.imread(str(f)) for f in sorted(stack.glob("*.jpg"))]
    fused = merge.process(frames)
    cv2.imwrite(str(out / f"{stack.name}.jpg"), np.clip(fused * 255 + 0.5, 0, 255).astype(np.uint8))
"""


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=20)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--brackets", type=Path, default=common.BRACKETS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None, help="as fuse --jobs (default: fuse's own default)")
    a = ap.parse_args()
    common.need(a.brackets, "this benchmark")
    print(common.describe())
    env = common.child_env()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        n = common.write_jpeg_brackets(a.brackets, src, a.stacks, a.megapixels)
        sample = cv2.imread(str(next(src.glob("*/1.jpg"))))
        print(f"{n} real brackets x 3 frames, {sample.shape[1]}x{sample.shape[0]} JPEG; median of {a.repeat} runs")
        fuse = [sys.executable, "-m", "fusecli", "fuse", str(src), "--format", "jpg", "--overwrite", "--quiet"]
        fuse += ["--jobs", str(a.jobs)] if a.jobs else []
        runs = {
            "Mertens loop (cv2, 8-bit)": [sys.executable, "-c", MERTENS_LOOP, str(src), str(Path(tmp) / "mertens")],
            "fusecli fuse --align none": fuse + ["-o", str(Path(tmp) / "none"), "--align", "none"],
            "fusecli fuse (default align)": fuse + ["-o", str(Path(tmp) / "default")],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        }
        times = {name: [] for name in runs}
        for cmd in runs.values():  # one warm-up each (page cache), then alternating repeats
            wall(cmd, env)
        for _ in range(a.repeat):
            for name, cmd in runs.items():
                times[name].append(wall(cmd, env))
        base = float(np.median(times["Mertens loop (cv2, 8-bit)"]))
        print(f"{'':<32}{'total s':>9}{'per stack':>11}{'vs Mertens':>12}")
        for name, ts in times.items():
            t = float(np.median(ts))
            print(f"{name:<32}{t:>9.2f}{t / n:>11.3f}{t / base:>11.2f}x")
        print("targets: --align none <= 1.0x, default alignment <= 2.0x")
    seconds = {name: float(np.median(ts)) for name, ts in times.items()}
    none = seconds["fusecli fuse --align none"] / base
    aligned = seconds["fusecli fuse (default align)"] / base
    what = f"{n} real {a.megapixels:g} MP 3-frame JPEG brackets, whole fuse command vs a MergeMertens loop"
    common.record(
        "folder",
        {
            "stacks": n,
            "size": [sample.shape[1], sample.shape[0]],
            "repeat": a.repeat,
            "jobs": a.jobs,
            "seconds": seconds,
        },
        [
            common.headline(
                f"{what}, --align none", round(none, 2), "x the loop's time", target="<= 1x", met=none <= 1
            ),
            common.headline(
                f"{what}, default alignment", round(aligned, 2), "x the loop", target="<= 2x", met=aligned <= 2
            ),
        ],
    )


if __name__ == "__main__":
    main()
