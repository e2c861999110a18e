"""What every benchmark shares: the environment numpy and torch read when they load (set as the CLI
sets it, so every benchmark imports this module first: pyproject.toml's isort settings put it
there), the machine it ran on, a median timer, the environment of child processes, the stacks the
benchmarks synthesise, and :func:`record`, which writes a benchmark's figures as JSON under
``bench/results/`` (bench/README.md, "Results").
"""

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from fusecli.runtime import library_defaults, usable_cores

#: The environment as the user gave it: comparators (MergeMertens, enfuse) run in it, as users run them.
USER_ENV = dict(os.environ)
library_defaults()  # as the CLI does, before numpy and torch load
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SAMPLES = ROOT / "samples"
SHARED = ROOT.parent / "shared" / "data"
BRACKETS = SHARED / "brackets"
#: The seed's bracket: exposures 1, 1/4, 1/16 of the brightest frame.
RATIOS = (1.0, 0.25, 0.0625)


# --- the machine -------------------------------------------------------------------------------


def machine() -> dict:
    """What a figure was measured on: CPU model, usable cores, memory, GPU (None without CUDA),
    torch, Python and the OS."""
    cpu = platform.processor() or "unknown CPU"
    memory = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
            memory = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {
        "cpu": cpu,
        "cores": usable_cores(),
        "memory_gib": memory,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def describe() -> str:
    """The machine as one line, which every benchmark prints first."""
    m = machine()
    return (
        f"machine: {m['cpu']}, {m['cores']} cores usable, {m['memory_gib']} GiB, torch {m['torch']} "
        f"({torch.get_num_threads()} threads), {m['gpu'] or 'no CUDA device'}, Python {m['python']}"
    )


def commit() -> str:
    """The checkout's commit, with ``-dirty`` when the code (fusecli/, bench/'s scripts) differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        code = ["fusecli", "bench", ":(exclude)bench/results", ":(exclude)bench/*.md"]
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *code], cwd=ROOT).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


# --- results -------------------------------------------------------------------------------------


def headline(what: str, value: float, unit: str, *, target: str | None = None, met: bool | None = None) -> dict:
    """One figure for the summary tables: what it is, its value and unit, the target and whether it
    is met (None: no target)."""
    return {"what": what, "value": value, "unit": unit, "target": target, "met": met}


def record(name: str, figures: dict, headlines: list[dict] = ()) -> Path:
    """Write ``bench/results/NAME.json``: the benchmark, the command that ran it, date, commit,
    machine, every figure (``figures``) and the ones the summary tables show (``headlines``, made
    by :func:`headline`). Returns the path; bench/summary.py reads them all."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": Path(sys.argv[0]).name,
        "command": shlex.join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "machine": machine(),
        "headlines": list(headlines),
        "figures": figures,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    print(f"results: {path.relative_to(ROOT)}")
    return path


# --- timing and processes ------------------------------------------------------------------------


def median_seconds(fn, repeat: int, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones.

    ``sync`` (e.g. torch.cuda.synchronize) is called before each clock read when given.
    """
    times = []
    for i in range(warmup + repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child_env(**extra: str) -> dict:
    """The environment of a child process, fusecli's or a comparator's: the user's (:data:`USER_ENV`:
    fusecli's entry point sets its own defaults, as it does for a user), this checkout first on
    PYTHONPATH, then whatever PYTHONPATH already held (packages installed there by path, as on a
    lent GPU machine), and ``extra``."""
    return dict(USER_ENV, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), USER_ENV.get("PYTHONPATH")])), **extra)


def need(path: Path, what: str) -> None:
    """Stop with a message (exit 0: a skip, not a failure) when ``path`` is absent."""
    if not path.exists():
        print(f"{path} is absent: {what} needs ../shared beside the checkout; skipped")
        sys.exit(0)


# --- the stacks the benchmarks synthesise --------------------------------------------------------


def rgb_stack(megapixels: float) -> np.ndarray:
    """A (3, 3, H, W) float32 RGB bracket of a 4:3 procedural scene of ``megapixels`` at
    :data:`RATIOS`, linear [0, 1], C-contiguous planes as fusecli's decoders fill a stack."""
    from fusecli.synth import procedural_scene

    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(h * 4 / 3))
    scene = procedural_scene(h, w, np.random.default_rng(0))  # (H, W, 3)
    scene *= np.float32(0.5 / np.percentile(scene, 50))  # median at half scale in the 1/1 frame
    return np.ascontiguousarray(np.stack([np.moveaxis(np.clip(scene * np.float32(r), 0, 1), -1, 0) for r in RATIOS]))


def write_tiff_stacks(root: Path, count: int, megapixels: float) -> list[list[Path]]:
    """``count`` folders of three sRGB-encoded 16-bit TIFFs (H, W, 3) at :data:`RATIOS`, 4:3,
    different procedural scenes, as photographers' converter TIFF stacks are."""
    import tifffile

    from fusecli.develop import linear_to_srgb
    from fusecli.synth import procedural_scene

    h = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(h * 4 / 3))
    stacks = []
    for i in range(count):
        scene = procedural_scene(h, w, np.random.default_rng(i))
        scene *= np.float32(0.5 / np.percentile(scene, 50))
        folder = root / f"stack_{i:02d}"
        folder.mkdir(parents=True)
        files = []
        for k, r in enumerate(RATIOS):
            path = folder / f"frame_{k + 1}.tif"
            encoded = linear_to_srgb(np.clip(scene * np.float32(r), 0, 1))
            tifffile.imwrite(path, np.round(encoded * 65535).astype(np.uint16), photometric="rgb")
            files.append(path)
        stacks.append(files)
    return stacks


def write_dng_stack(folder: Path, megapixels: float, frames: int, seed: int = 0) -> None:
    """One RAW bracket of ``frames`` DNGs (RGGB, 14-bit, exposures 1, 1/4, ..., each with a preview of
    about 1024 px as cameras embed one) of a smooth gradient scene with noise, ``megapixels`` each,
    into ``folder``."""
    from fusecli.io.dng import write_dng
    from fusecli.io.metadata import Capture
    from fusecli.io.raw import CameraInfo

    h = int(round((megapixels * 1e6 / 1.5) ** 0.5 / 2)) * 2
    w = int(round(h * 1.5 / 2)) * 2
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    scene = 0.02 + 3.0 * (x / w) * (y / h) + 0.05 * np.random.default_rng(seed).random((h, w), dtype=np.float32)
    cam = CameraInfo("fusecli", "bench", "RGGB", (2048.0,) * 4, 16383.0, (2.0, 1.0, 1.5), None)
    folder.mkdir(parents=True)
    step = max(1, max(h, w) // 1024)
    for k, r in enumerate(0.25**k for k in range(frames)):
        mosaic = np.clip(np.minimum(scene * r, 1.0) * (16383 - 2048) + 2048, 0, 16383).astype(np.uint16)
        shot = Capture.shot(time=r / 60, timestamp=datetime(2026, 1, 1, 0, 0, k))
        # a small rendered preview, as cameras embed one
        shown = np.round(np.sqrt(np.clip(scene[::step, ::step] * r, 0, 1)) * 255).astype(np.uint8)
        write_dng(folder / f"f{k}.dng", mosaic, cam, shot, preview=np.repeat(shown[..., None], 3, axis=-1))


def _exposure_list(folder: Path) -> dict[str, float]:
    """A real bracket's exposures by file name (relative_exposure.txt, else exposures.txt), or {}."""
    for table in (folder / "relative_exposure.txt", folder / "exposures.txt"):
        if table.is_file():
            pairs = (line.split() for line in table.read_text().splitlines() if line.strip())
            return {name: float(value) for name, value in pairs}
    return {}


def write_jpeg_brackets(brackets: Path, dest: Path, stacks: int, megapixels: float) -> int:
    """From the real brackets in ``brackets`` (only read, never kept: most have no licence), write
    ``stacks`` 3-frame JPEG brackets (brightest, middle, darkest frame, area-downscaled to
    ``megapixels``, quality 95, with a relative_exposure.txt) into ``dest``; returns how many."""
    import cv2

    made = 0
    for bracket in sorted(p for p in brackets.iterdir() if p.is_dir()):
        table = _exposure_list(bracket)
        names = sorted(table, key=lambda n: -table[n])
        if len(names) < 3:
            continue
        folder = dest / bracket.name
        folder.mkdir(parents=True)
        lines = []
        for i, name in enumerate([names[0], names[len(names) // 2], names[-1]]):
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
