"""Small photos end to end: ``fusecli fuse`` on a folder of 20 real 1 MP JPEG brackets against
OpenCV's MergeMertens in a Python loop, each as a new process (start-up and imports included), as a
user runs them. Targets: fusecli <= the Mertens loop with ``--align none``, <= 2x with the default
alignment.

    python bench/bench_folder.py [--stacks 20] [--megapixels 1] [--repeat 3] [--brackets DIR] [--jobs N]

The folder is made in a temporary directory from ``../shared/data/brackets`` (real brackets shot by
other people; most have no licence, so they are only read, never kept): for each of the first
``--stacks`` brackets with an exposure list, its brightest, middle and darkest frames,
area-downscaled to ``--megapixels`` and written as JPEG (quality 95), with a ``relative_exposure.txt``
giving their exposures.
The Mertens loop reads each stack's JPEGs with cv2.imread, runs ``cv2.createMergeMertens().process``
on them (8-bit, OpenCV's defaults) and writes an 8-bit JPEG; fusecli writes a JPEG too.
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

ROOT = Path(__file__).resolve().parents[1]
BRACKETS = ROOT.parent / "shared" / "data" / "brackets"

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


def exposures(folder: Path) -> dict[str, float]:
    """A bracket's exposures by file name (relative_exposure.txt, else exposures.txt: seconds), or {}."""
    for table in (folder / "relative_exposure.txt", folder / "exposures.txt"):
        if table.is_file():
            pairs = (line.split() for line in table.read_text().splitlines() if line.strip())
            return {name: float(value) for name, value in pairs}
    return {}


def make_folder(brackets: Path, dest: Path, stacks: int, megapixels: float) -> int:
    """Write ``stacks`` 3-frame JPEG brackets of ``megapixels`` into ``dest``; returns how many."""
    made = 0
    for bracket in sorted(p for p in brackets.iterdir() if p.is_dir()):
        table = exposures(bracket)
        names = sorted(table, key=lambda n: -table[n])
        if len(names) < 3:
            continue
        chosen = [names[0], names[len(names) // 2], names[-1]]
        folder = dest / bracket.name
        folder.mkdir(parents=True)
        lines = []
        for i, name in enumerate(chosen):
            image = cv2.imread(str(bracket / name))
            h, w = image.shape[:2]
            scale = min(1.0, (megapixels * 1e6 / (h * w)) ** 0.5)
            image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / f"{i + 1}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(f"{i + 1}.jpg {table[name]:g}")
        (folder / "relative_exposure.txt").write_text("\n".join(lines) + "\n")
        made += 1
        if made == stacks:
            break
    return made


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def folder_arguments(doc: str) -> argparse.ArgumentParser:
    """The options that say which folder :func:`make_folder` makes (shared with profile_folder.py)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=20)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--brackets", type=Path, default=BRACKETS)
    return ap


def parse_folder_arguments(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parsed options; exits with a message when the brackets folder is absent."""
    a = ap.parse_args()
    if not a.brackets.is_dir():
        sys.exit(f"{a.brackets}: no brackets folder (../shared/data/brackets); nothing to measure")
    return a


def main() -> None:
    ap = folder_arguments(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None, help="as fuse --jobs (default: fuse's own default)")
    a = parse_folder_arguments(ap)
    print(common.describe())
    env = common.child_env()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        n = make_folder(a.brackets, src, a.stacks, a.megapixels)
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


if __name__ == "__main__":
    main()
