"""Where fuse's time goes: the stages of one 24 MP RAW stack (decode, align, deghost, model, DNG
write, and of that write the uint16 mosaic and the preview) and of one 12 MP 16-bit sRGB TIFF stack
as bench_enfuse.py makes them (16-bit TIFF out), and torch.profiler's table of the model on a 12 MP
3-frame RGB stack (the Mertens benchmark's input) — the profile behind bench/README.md's notes on
the speed targets.

    python bench/profile_fuse.py [--megapixels 24] [--rgb-megapixels 12]
"""

import argparse
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from fusecli import align, develop
from fusecli.deghost import deghost
from fusecli.develop import dng_preview
from fusecli.discover import discover
from fusecli.fuse import MAX_MEMORY_GIB, band_rows, fuse_stack
from fusecli.model import load_model
from fusecli.outputs import OutputOptions, output_paths, to_mosaic, write_outputs
from fusecli.runtime import keep_freed_memory
from fusecli.stack import Stack, load_stack


def stages(model, folder: Path, out: Path, ratios=None, transfer="auto") -> tuple[Stack, np.ndarray]:
    """Print the stages of fusing the stack in ``folder`` into ``out``, one after another, 3 runs ->
    the last run's stack and fused image."""
    source = discover([folder])[0]
    options = OutputOptions(overwrite=True)
    paths = output_paths(source, out, options)
    written = {"raw": "DNG", "rgb": "TIFF"}.get(source.kind, "write")
    print(f"{'decode':>8}{'align':>8}{'deghost':>9}{'model':>8}{written:>8}")
    stack = fused = None
    for _ in range(3):
        # the previous run's arrays let go first: decoding next to them grew the heap by 0.3 GB a run
        # for two runs, and the first touch of that memory (the kernel zeroing huge pages, system
        # time) tripled the decode's time; fuse's pipeline pays that growth once, in its first stacks
        stack = frames = fused = summaries = None
        t0 = time.perf_counter()
        stack = load_stack(source, ratios, transfer)
        t1 = time.perf_counter()
        summaries = {}  # each frame read once for both, as stack.register does
        frames, motion = align.align_stack(stack.frames, stack.ratios, "translation", summaries)
        t2 = time.perf_counter()
        deghost(frames, stack.ratios, stack.transfer == "srgb", summaries)
        t3 = time.perf_counter()
        fused, _ = fuse_stack(model, stack, torch.device("cpu"), MAX_MEMORY_GIB, keep_weights=False)
        t4 = time.perf_counter()
        write_outputs(stack, source, fused, None, options=options, paths=paths)
        t5 = time.perf_counter()
        print(f"{t1 - t0:>8.3f}{t2 - t1:>8.3f}{t3 - t2:>9.3f}{t4 - t3:>8.3f}{t5 - t4:>8.3f}")
    return stack, fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=24.0)
    ap.add_argument("--rgb-megapixels", type=float, default=12.0)
    a = ap.parse_args()
    keep_freed_memory()
    print(common.describe())
    model = load_model()[0]
    with tempfile.TemporaryDirectory() as tmp:
        common.write_dng_stack(Path(tmp) / "s", a.megapixels, 3)
        print(f"\n{a.megapixels:g} MP RAW stack, 3 frames, one after another (no overlap), seconds; 3 runs")
        stack, fused = stages(model, Path(tmp) / "s", Path(tmp))
        mosaic = common.median_seconds(lambda: to_mosaic(fused, stack.camera.cfa), 5)
        preview = common.median_seconds(lambda: dng_preview(fused, stack.camera), 5)
        print(
            f"  of the DNG: the uint16 mosaic (fusecli.outputs.to_mosaic) {mosaic:.3f} s, the preview {preview:.3f} s"
        )
        folder = common.write_tiff_stacks(Path(tmp) / "t", 1, a.rgb_megapixels)[0][0].parent
        print(f"\n{a.rgb_megapixels:g} MP 16-bit sRGB TIFF stack (bench_enfuse.py's), the same; 3 runs")
        stack, fused = stages(model, folder, Path(tmp), common.RATIOS, "srgb")
        encode = common.median_seconds(lambda: develop.linear_to_srgb(fused), 3)
        print(f"  of the TIFF: the sRGB encode (fusecli.develop.linear_to_srgb) {encode:.3f} s")
    frames = torch.from_numpy(common.rgb_stack(a.rgb_megapixels))[None]
    ratios = torch.tensor([common.RATIOS])
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
