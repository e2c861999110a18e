"""End to end against the decoder floor: ``fuse`` on a folder of RAW (DNG) stacks, DNG out, against
reading the same files with rawpy alone; peak RSS. Targets (the speed issue): fuse <= 2x the decode time
with ``--align none``, <= 3x with alignment.

    python bench/bench_fuse.py [--stacks 10] [--megapixels 24] [--frames 3] [--repeat 3] [--no-samples] [--cli]
                               [--dng linear|fused]

Stacks are synthesised (common.write_dng_stack: a smooth gradient scene with noise, RGGB, 14-bit,
exposures 1, 1/4, ...).
"fuse" is fusecli.fuse.fuse_sources in this process with the model loaded (decode, fusion, DNG
write, the next stack decoded while this one is fused); ``--cli`` also times the whole
``fusecli fuse`` command as a new process (Python start-up, imports and model load included).
"decode" is ``rawpy.imread(f).raw_image_visible.copy()`` for every frame, one after another.
For the memory target, run the large stack alone and read the command's peak RSS:
--stacks 1 --megapixels 50 --frames 5 --repeat 1 --no-samples --cli.

``--dng`` is fuse's: ``linear`` (the default: the scene-linear merge as a floating-point DNG, no
network) or ``fused`` (the network's tone-fused DNG).

Results: bench/results/fuse_<megapixels>mp_<frames>f_align-<mode>[_dng-fused].json.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import rawpy

from fusecli.discover import discover
from fusecli.fuse import FuseOptions, default_jobs, fuse_sources
from fusecli.model import load_model
from fusecli.outputs import OutputOptions
from fusecli.runtime import keep_freed_memory, pick_device
from fusecli.stack import StackOptions


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
    ap.add_argument("--dng", default="linear", choices=("linear", "fused"), help="as fuse --dng")
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
            common.write_dng_stack(big / f"stack_{i:02d}", a.megapixels, a.frames, seed=i)
        cases = [] if a.no_samples else [("samples (3 stacks, 3 x 0.2 MP)", common.SAMPLES)]
        rows = []
        for name, folder in cases + [(f"{a.stacks} x {a.megapixels:g} MP, {a.frames} frames", big)]:
            sources = discover([folder])
            jobs = a.jobs or default_jobs(sources)
            files = [f.path for s in sources for f in s.frames]
            out = Path(tmp) / "out"

            def run(sources=sources, out=out, jobs=jobs) -> None:
                output = OutputOptions(overwrite=True, dng=a.dng)
                options = FuseOptions(StackOptions(align=a.align), output, jobs=jobs)
                fuse_sources(sources, model, device, out, options)

            def decode(files=files) -> None:
                for f in files:
                    with rawpy.imread(str(f)) as raw:
                        raw.raw_image_visible.copy()

            warmup = 0 if a.repeat == 1 else 1
            t_fuse = common.median_seconds(run, a.repeat, warmup=warmup) / len(sources)
            t_decode = common.median_seconds(decode, a.repeat, warmup=warmup) / len(sources)
            print(f"{name:<36}{t_fuse:>9.3f}{t_decode:>9.3f}{t_fuse / t_decode:>7.2f}x   ({jobs} opened at once)")
            row = {"stacks": name, "jobs": jobs, "fuse_s_per_stack": t_fuse, "decode_s_per_stack": t_decode}
            rows.append(row)
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
                        "--dng",
                        a.dng,
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
                row.update(command_s_per_stack=t_cli, command_peak_rss_gib=usage.ru_maxrss / 2**20)
    big_row = rows[-1]
    ratio = big_row["fuse_s_per_stack"] / big_row["decode_s_per_stack"]
    limit = 2 if a.align == "none" else 3
    what = (
        f"fuse per {a.megapixels:g} MP {a.frames}-frame DNG stack vs rawpy's decode, --dng {a.dng} out, "
        f"--align {a.align}"
    )
    headlines = [common.headline(what, round(ratio, 2), "x the decode", target=f"<= {limit}x", met=ratio <= limit)]
    if "command_peak_rss_gib" in big_row:
        rss = big_row["command_peak_rss_gib"]
        headlines.append(
            common.headline(
                f"fuse command's peak RSS, {a.stacks} x {a.megapixels:g} MP {a.frames}-frame DNG stacks",
                round(rss, 2),
                "GiB",
                target="<= 3 GiB" if a.megapixels >= 50 else None,
                met=rss <= 3 if a.megapixels >= 50 else None,
            )
        )
    common.record(
        f"fuse_{a.megapixels:g}mp_{a.frames}f_align-{a.align}" + ("_dng-fused" if a.dng == "fused" else ""),
        {"align": a.align, "dng": a.dng, "repeat": a.repeat, "rows": rows},
        headlines,
    )
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
