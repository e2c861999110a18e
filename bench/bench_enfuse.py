"""End to end against enfuse: a folder of ten 3-frame 12 MP stacks as 16-bit TIFF, fused by
``fusecli fuse`` (16-bit TIFF out) and by ``enfuse -d 16`` (2 OpenMP threads), each as its own
process from a cold start: wall time, peak RSS, and the CPU time in user and system mode.

    python bench/bench_enfuse.py [--stacks 10] [--megapixels 12] [--repeat 1] [--jobs N]

Needs enfuse (Debian: ``apt-get install enfuse``); without it, fusecli alone is measured and the
comparison is skipped with a message. The stacks are synthesised on the fly from procedural
scenes (common.write_tiff_stacks), exposures 1, 1/4, 1/16, sRGB-encoded as photographers' TIFF stacks are;
fusecli reads them with ``--transfer srgb --ratios 1,0.25,0.0625``. enfuse gets each stack's three
files and writes one TIFF per stack, one process per stack as a script over a folder runs it.
Peak RSS is the largest of the processes (``wait4``); times are the median of --repeat runs.

Results: bench/results/enfuse.json.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

FUSECLI = [sys.executable, "-m", "fusecli"]


def run_measured(commands: list[list[str]], env: dict) -> tuple[float, float, float, float]:
    """Run commands one after another -> (wall seconds, peak RSS GiB of the largest process, user and
    system CPU seconds of them all)."""
    peak, user, system = 0, 0.0, 0.0
    t0 = time.perf_counter()
    for cmd in commands:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{' '.join(cmd[:4])}... failed: {proc.stderr.read().decode()[-500:]}")
        peak, user, system = max(peak, usage.ru_maxrss), user + usage.ru_utime, system + usage.ru_stime
    return time.perf_counter() - t0, peak / 2**20, user, system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=10)
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=None, help="as fuse --jobs (default: fuse's own default)")
    a = ap.parse_args()
    print(common.describe())
    enfuse = shutil.which("enfuse")
    env = common.child_env(OMP_NUM_THREADS="2")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stacks = common.write_tiff_stacks(root / "in", a.stacks, a.megapixels)
        ours_cmd = [
            [
                *FUSECLI,
                "fuse",
                str(root / "in"),
                "-o",
                str(root / "fusecli"),
                "--format",
                "tiff",
                "--transfer",
                "srgb",
                "--ratios",
                ",".join(map(str, common.RATIOS)),
                "--overwrite",
                "--quiet",
                *(["--jobs", str(a.jobs)] if a.jobs else []),
            ]
        ]
        theirs_cmd = (
            [
                [enfuse, "-d", "16", "-o", str(root / "enfuse" / f"{files[0].parent.name}.tif"), *map(str, files)]
                for files in stacks
            ]
            if enfuse
            else []
        )
        (root / "enfuse").mkdir()
        rows = [("fusecli fuse", ours_cmd)] + ([("enfuse -d 16", theirs_cmd)] if enfuse else [])
        results = {}
        for name, cmds in rows:
            runs = [run_measured(cmds, env) for _ in range(a.repeat)]
            results[name] = (
                statistics.median(r[0] for r in runs),
                max(r[1] for r in runs),
                statistics.median(r[2] for r in runs),
                statistics.median(r[3] for r in runs),
            )
    print(f"{a.stacks} stacks x 3 frames x {a.megapixels:g} MP, 16-bit TIFF in and out; median of {a.repeat} run(s)")
    print(f"{'tool':<16}{'wall s':>10}{'s/stack':>10}{'peak RSS GiB':>14}{'user s':>9}{'system s':>10}")
    for name, (wall, rss, user, system) in results.items():
        print(f"{name:<16}{wall:>10.2f}{wall / a.stacks:>10.2f}{rss:>14.2f}{user:>9.2f}{system:>10.2f}")
    figures = {
        "stacks": a.stacks,
        "megapixels": a.megapixels,
        "repeat": a.repeat,
        "jobs": a.jobs,
        "tools": {
            name: {"wall_s": wall, "peak_rss_gib": rss, "user_s": user, "system_s": system}
            for name, (wall, rss, user, system) in results.items()
        },
    }
    if not enfuse:
        print("enfuse is not installed (Debian: apt-get install enfuse): comparison skipped, nothing recorded")
        return
    speedup = results["enfuse -d 16"][0] / results["fusecli fuse"][0]
    memory = results["fusecli fuse"][1] / results["enfuse -d 16"][1]
    print(f"fusecli is {speedup:.1f}x faster than enfuse, with {memory:.2f}x its peak memory")
    what = f"fuse vs enfuse -d 16, {a.stacks} 3-frame {a.megapixels:g} MP 16-bit TIFF stacks, whole commands"
    common.record(
        "enfuse",
        figures,
        [
            common.headline(what, round(speedup, 2), "x faster", target=">= 3x", met=speedup >= 3),
            common.headline(
                f"{what}: peak memory", round(memory, 2), "x enfuse's", target="<= 1.5x", met=memory <= 1.5
            ),
        ],
    )


if __name__ == "__main__":
    main()
