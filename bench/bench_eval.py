"""``eval`` against ``fuse`` on the same stacks, each as a user runs it (a new process, start-up
included). Target: eval <= 2x fuse.

    python bench/bench_eval.py [--stacks 4] [--frames 10] [--size 768x512] [--repeat 2]

The stacks are display-referred brackets that ``fusecli synth --display`` renders from procedural
scenes (10 frames by default, where MEF-SSIM's pairwise statistics over K frames are most of eval's
work). ``eval`` scores the model (its default
method: every loss term, PSNR, SSIM, MEF-SSIM); ``fuse`` writes a PNG per stack.

Results: bench/results/eval.json.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=4)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", default="768x512")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    print(common.describe())
    env = common.child_env()
    cli = [sys.executable, "-m", "fusecli"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        synth = ["synth", "--procedural", str(a.stacks), "--display", "--frames", str(a.frames), "--size", a.size]
        subprocess.run(cli + synth + ["-o", str(src)], env=env, check=True, stdout=subprocess.DEVNULL)
        runs = {
            "fuse": cli + ["fuse", str(src), "-o", str(Path(tmp) / "out"), "--format", "png", "--overwrite", "--quiet"],
            "eval": cli + ["eval", str(src), "--json"],
        }
        times = {name: [wall(cmd, env) for _ in range(a.repeat)] for name, cmd in runs.items()}
    print(f"{a.stacks} display-referred stacks x {a.frames} frames ({a.size} synth size); median of {a.repeat} runs")
    t_fuse, t_eval = (statistics.median(times[n]) for n in ("fuse", "eval"))
    print(f"{'command':<10}{'total s':>9}{'per stack':>11}")
    for name, t in (("fuse", t_fuse), ("eval", t_eval)):
        print(f"{name:<10}{t:>9.2f}{t / a.stacks:>11.2f}")
    print(f"eval / fuse: {t_eval / t_fuse:.2f}x   (target <= 2x)")
    ratio = t_eval / t_fuse
    common.record(
        "eval",
        {
            "stacks": a.stacks,
            "frames": a.frames,
            "size": a.size,
            "repeat": a.repeat,
            "fuse_s": t_fuse,
            "eval_s": t_eval,
        },
        [
            common.headline(
                f"eval vs fuse, {a.stacks} display-referred stacks of {a.frames} frames, whole commands",
                round(ratio, 2),
                "x fuse's time",
                target="<= 2x",
                met=ratio <= 2,
            )
        ],
    )


if __name__ == "__main__":
    main()
