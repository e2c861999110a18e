"""Where a small photo's time goes: the stages of `fuse` on bench_folder's 20 real 1 MP JPEG brackets,
in this process (start-up excluded), one after another and as the pipeline runs them.

    python bench/profile_folder.py [--stacks 20] [--megapixels 1] [--brackets DIR]

Prints, per stack: opening (decode, registration, deghosting) with ``--align none`` and with the
default alignment, the fusion (the model, `fuse_stack`) and writing the JPEG, one after another;
then `fuse_sources` (the three stages overlapped in threads) for both alignments. The folder is made
in a temporary directory as bench_folder.py makes it (real brackets, never kept).
"""

import argparse
import tempfile
import time
from pathlib import Path

import common
import torch

from fusecli.discover import discover
from fusecli.fuse import FuseOptions, fuse_sources, fuse_stack
from fusecli.model import load_model
from fusecli.outputs import OutputOptions, output_paths, write_outputs
from fusecli.runtime import keep_freed_memory
from fusecli.stack import StackOptions, open_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=20)
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--brackets", type=Path, default=common.BRACKETS)
    a = ap.parse_args()
    common.need(a.brackets, "this profile")
    keep_freed_memory()
    print(common.describe())
    model, cpu = load_model()[0], torch.device("cpu")
    options = OutputOptions(formats=("jpg",), overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        n = common.write_jpeg_brackets(a.brackets, src, a.stacks, a.megapixels)
        sources = discover([src])
        out.mkdir()
        for source in sources:  # warm-up: page cache, OpenCV and torch first calls
            fuse_stack(model, open_stack(source, StackOptions(align="none")), cpu, keep_weights=False)
        spent = dict.fromkeys(("open, --align none", "open, default alignment", "fuse", "write"), 0.0)
        for source in sources:
            t0 = time.perf_counter()
            open_stack(source, StackOptions())
            t1 = time.perf_counter()
            stack = open_stack(source, StackOptions(align="none"))
            t2 = time.perf_counter()
            fused, _ = fuse_stack(model, stack, cpu, keep_weights=False)
            t3 = time.perf_counter()
            write_outputs(stack, source, fused, None, options=options, paths=output_paths(source, out, options))
            t4 = time.perf_counter()
            for key, seconds in zip(spent, (t2 - t1, t1 - t0, t3 - t2, t4 - t3)):
                spent[key] += seconds
        print(f"{n} real brackets x 3 frames, {a.megapixels:g} MP JPEG; seconds per stack")
        for key, seconds in spent.items():
            print(f"  {key:<34}{seconds / n:>7.3f}")
        for align in ("none", "translation"):
            t0 = time.perf_counter()
            fuse_sources(sources, model, cpu, out, FuseOptions(StackOptions(align=align), options))
            label = f"fuse_sources, --align {align}"
            print(f"  {label:<34}{(time.perf_counter() - t0) / n:>7.3f}   (stages overlapped)")


if __name__ == "__main__":
    main()
