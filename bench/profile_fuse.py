"""Where fuse's time goes: the stages of one 24 MP RAW stack (decode, align + deghost, model, DNG
write), and torch.profiler's table of the model on a 12 MP 3-frame RGB stack (the Mertens
benchmark's input) — the profile behind bench/README.md's notes on the speed targets.

    python bench/profile_fuse.py [--megapixels 24] [--rgb-megapixels 12]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402  (after common: it sets OMP_WAIT_POLICY first)
from bench_fuse import write_stack  # noqa: E402
from bench_mertens import RATIOS  # noqa: E402
from bench_mertens import stack as rgb_stack
from common import describe  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from fusecli import align  # noqa: E402
from fusecli.deghost import deghost  # noqa: E402
from fusecli.discover import discover  # noqa: E402
from fusecli.fuse import MAX_MEMORY_GIB, band_rows, fuse_stack  # noqa: E402
from fusecli.model import load_model  # noqa: E402
from fusecli.outputs import OutputOptions, output_paths, write_outputs  # noqa: E402
from fusecli.runtime import keep_freed_memory  # noqa: E402
from fusecli.stack import load_stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--rgb-megapixels", type=float, default=12.0)
    a = ap.parse_args()
    keep_freed_memory()
    print(describe())
    model = load_model()[0]
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        write_stack(Path(tmp) / "s", a.megapixels, 3)
        source = discover([Path(tmp) / "s"])[0]
        options = OutputOptions(overwrite=True)
        paths = output_paths(source, Path(tmp), options)
        print(f"\n{a.megapixels:g} MP RAW stack, 3 frames, one after another (no overlap), seconds; 3 runs")
        print(f"{'decode':>8}{'align':>8}{'deghost':>9}{'model':>8}{'DNG':>8}")
        for _ in range(3):
            t0 = time.perf_counter()
            stack = load_stack(source)
            t1 = time.perf_counter()
            summaries = {}  # each frame read once for both, as stack.register does
            frames, motion = align.align_stack(stack.frames, stack.ratios, "translation", summaries)
            t2 = time.perf_counter()
            deghost(frames, stack.ratios, stack.transfer == "srgb", summaries)
            t3 = time.perf_counter()
            fused, _ = fuse_stack(model, stack, cpu, MAX_MEMORY_GIB, keep_weights=False)
            t4 = time.perf_counter()
            write_outputs(stack, source, fused, None, options, paths)
            t5 = time.perf_counter()
            print(f"{t1 - t0:>8.3f}{t2 - t1:>8.3f}{t3 - t2:>9.3f}{t4 - t3:>8.3f}{t5 - t4:>8.3f}")
    frames = torch.from_numpy(rgb_stack(a.rgb_megapixels))[None]
    ratios = torch.tensor([RATIOS])
    rows = band_rows(frames.shape[1:], model.config.weight_channels(3), MAX_MEMORY_GIB)
    with torch.inference_mode():
        model(frames, ratios, band_rows=rows)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(frames, ratios, band_rows=rows)
    print(
        f"\nthe model on a {a.rgb_megapixels:g} MP 3-frame RGB stack (per-channel weights, bands of {rows} "
        "rows): torch.profiler"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=28))


if __name__ == "__main__":
    main()
