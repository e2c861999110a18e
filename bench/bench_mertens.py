"""Fusion compute: fusecli's model (weights + fused image) against OpenCV's MergeMertens on the same
3-frame RGB stacks already in memory, at 12 and 24 MP; and the model's full-resolution stage against
the memory-traffic floor. Targets: fusecli >= 3x faster than MergeMertens; its full-resolution stage
<= 2x the floor.

    python bench/bench_mertens.py [--megapixels 12 24] [--repeat 3]

The stack is synthesised on the fly (common.rgb_stack: a procedural scene at exposures 1, 1/4,
1/16, clipped to [0, 1]). fusecli runs FuseNet's forward (weights kept, as
``fuse --save-weights`` does, in bands of rows for the temporaries ``fuse --max-memory`` allows by
default) on a (1, 3, 3, H, W) float32 tensor; Mertens runs
``cv2.createMergeMertens().process`` on the same frames as three (H, W, 3) float32 images. Neither
timing includes building its input layout. "full-res" is the model's full-resolution stage alone
(``FuseNet._detail``: upsampling the blend and adding each frame's detail, output written); "floor"
is one read of the same float32 frames and one write of an output buffer: the faster of
``frames.sum(dim=1)`` and ``(f0 + f1).add_(f2)`` (a reduction over a middle dimension can run far
below the memory's speed, which would make the floor too lenient).

Results: bench/results/mertens.json.
"""

import argparse
import statistics
import time

import common
import cv2
import numpy as np
import torch

from fusecli.fuse import MAX_MEMORY_GIB, band_rows
from fusecli.model import load_model
from fusecli.runtime import keep_freed_memory, pick_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[12.0, 24.0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    keep_freed_memory()
    device = pick_device(a.device)
    model = load_model(None, device)[0]
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(common.describe())
    print(f"fusecli on {device}; median of {a.repeat} runs after one warm-up")
    print(
        f"{'stack':<22}{'fusecli s':>11}{'Mertens s':>11}{'speed-up':>10}{'full-res s':>12}{'floor s':>9}{'ratio':>7}"
        "   (targets: >= 3x; full-res <= 2x floor)"
    )
    stage = {}
    rows_out = []
    detail = model._detail

    def timed_detail(*args, **kwargs):
        t0 = time.perf_counter()
        out = detail(*args, **kwargs)
        stage.setdefault("full-res", []).append(time.perf_counter() - t0)
        return out

    model._detail = timed_detail
    for mp in a.megapixels:
        frames = common.rgb_stack(mp)
        tensor = torch.from_numpy(frames)[None].to(device)
        ratios = torch.tensor([common.RATIOS], device=device)
        images = [np.ascontiguousarray(np.moveaxis(f, 0, -1)) for f in frames]

        rows = band_rows(
            frames.shape, model.config.weight_channels(frames.shape[1]), MAX_MEMORY_GIB
        )  # as fuse does by default

        @torch.inference_mode()
        def ours(tensor=tensor, ratios=ratios, rows=rows) -> None:
            model(tensor, ratios, band_rows=rows, keep_weights=True)

        def theirs(images=images) -> None:
            cv2.createMergeMertens().process(images)

        @torch.inference_mode()
        def reduce(tensor=tensor) -> None:
            tensor.sum(dim=1)

        @torch.inference_mode()
        def add(tensor=tensor) -> None:
            out = tensor[:, 0] + tensor[:, 1]
            for k in range(2, tensor.shape[1]):
                out.add_(tensor[:, k])

        stage.clear()
        t_ours = common.median_seconds(ours, a.repeat, sync=sync)
        t_detail = statistics.median(stage["full-res"][1:]) if "full-res" in stage else 0.0
        t_floor = min(
            common.median_seconds(reduce, a.repeat, sync=sync), common.median_seconds(add, a.repeat, sync=sync)
        )
        t_theirs = common.median_seconds(theirs, a.repeat)
        h, w = frames.shape[-2:]
        print(
            f"{f'{h * w / 1e6:.1f} MP x 3 frames':<22}{t_ours:>11.3f}{t_theirs:>11.3f}{t_theirs / t_ours:>9.1f}x"
            f"{t_detail:>12.3f}{t_floor:>9.3f}{t_detail / t_floor:>6.1f}x"
        )
        rows_out.append(
            {
                "megapixels": round(h * w / 1e6, 1),
                "fusecli_s": t_ours,
                "mertens_s": t_theirs,
                "speedup": t_theirs / t_ours,
                "full_res_s": t_detail,
                "floor_s": t_floor,
                "full_res_over_floor": t_detail / t_floor if t_floor else None,
            }
        )
    first = rows_out[0]
    common.record(
        "mertens",
        {"device": str(device), "repeat": a.repeat, "stacks": rows_out},
        [
            common.headline(
                f"model vs OpenCV MergeMertens, {first['megapixels']:g} MP 3-frame RGB in memory",
                round(first["speedup"], 2),
                "x faster",
                target=">= 3x",
                met=first["speedup"] >= 3,
            ),
            common.headline(
                f"full-resolution pass vs one read + write of the frames, {first['megapixels']:g} MP",
                round(first["full_res_over_floor"], 2),
                "x the floor",
                target="<= 2x",
                met=first["full_res_over_floor"] <= 2,
            ),
        ],
    )


if __name__ == "__main__":
    main()
