"""A kernel of our own for the full-resolution pass: the same arithmetic as ``FuseNet._detail``
written as one loop over output rows in Numba (reads each frame once, writes the output once),
against fusecli's PyTorch pass and the memory floor, on the Mertens benchmark's 12 MP stack.

    pip install numba && python bench/numba_detail.py [--megapixels 12] [--repeat 3]

Numba is not a fusecli dependency; without it this prints a message and exits. Also printed: what
the kernel costs each new process (importing Numba, loading the compiled kernel from its on-disk
cache) and the first compilation, which decide whether it can pay on a run of a few stacks.
"""

import argparse
import sys
import time
from pathlib import Path

import common
import numpy as np
import torch
from bench_mertens import RATIOS, stack

from fusecli.model import _interp_rows, load_model
from fusecli.runtime import keep_freed_memory

KERNEL = """
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=True)
def detail_pass(frames, coef, low, ylo, yhi, yfrac, xlo, xhi, xfrac, out):
    K, C, H, W = frames.shape
    M, wb = K + C, coef.shape[2]
    for y in prange(H):
        y0, y1, fy = ylo[y], yhi[y], yfrac[y]
        rows = np.empty((M, wb), np.float32)  # the two low-resolution rows, mixed
        for m in range(M):
            src = coef[m] if m < K else low[m - K]
            for i in range(wb):
                rows[m, i] = src[y0, i] + fy * (src[y1, i] - src[y0, i])
        full = np.empty((M, W), np.float32)  # then across
        for m in range(M):
            for x in range(W):
                full[m, x] = rows[m, xlo[x]] + xfrac[x] * (rows[m, xhi[x]] - rows[m, xlo[x]])
        for c in range(C):
            o = out[c, y]
            for x in range(W):
                o[x] = full[K + c, x]
            for k in range(K):
                f, w = frames[k, c, y], full[k]
                for x in range(W):
                    o[x] += w[x] * f[x]
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    t0 = time.perf_counter()
    try:
        import numba  # noqa: F401
    except ImportError:
        print("numba is not installed (pip install numba): nothing to measure")
        return
    keep_freed_memory()
    print(common.describe())
    cache = Path.home() / ".cache" / "fusecli-bench"
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / "numba_detail_kernel.py"
    if not source.is_file() or source.read_text() != KERNEL:  # (a rewrite would invalidate Numba's cache)
        source.write_text(KERNEL)
    sys.path.insert(0, str(cache))
    from numba_detail_kernel import detail_pass

    t_import = time.perf_counter() - t0  # (common.describe() and the file write included: a few ms)

    model = load_model()[0]
    frames = torch.from_numpy(stack(a.megapixels))[None]
    ratios = torch.tensor([RATIOS])
    maps = {}
    detail = model._detail

    def keep(frames, coef, low, coef_w, band_rows):
        maps.update(frames=frames, coef=coef, low=low)
        return detail(frames, coef, low, coef_w, band_rows)

    model._detail = keep
    with torch.inference_mode():
        reference = model(frames, ratios, keep_weights=False)[0][0].numpy()
    f, coef, low = (maps[n][0].numpy() for n in ("frames", "coef", "low"))
    k, c, h, w = f.shape
    ys = [t.numpy() for t in _interp_rows(slice(0, h), h, coef.shape[-2], maps["coef"])]
    xs = [t.numpy() for t in _interp_rows(slice(0, w), w, coef.shape[-1], maps["coef"])]
    out = np.empty((c, h, w), np.float32)
    t0 = time.perf_counter()
    detail_pass(f, coef, low, *ys, *xs, out)
    t_first = time.perf_counter() - t0
    t_numba = common.median_seconds(lambda: detail_pass(f, coef, low, *ys, *xs, out), a.repeat)
    with torch.inference_mode():
        t_torch = common.median_seconds(lambda: detail(maps["frames"], maps["coef"], maps["low"], None, None), a.repeat)
        t_floor = common.median_seconds(
            lambda: (maps["frames"][:, 0] + maps["frames"][:, 1]).add_(maps["frames"][:, 2]), a.repeat
        )
    print(f"{h * w / 1e6:.1f} MP x {k} frames; seconds (median of {a.repeat})")
    print(f"  fusecli's pass (PyTorch)      {t_torch:.3f}   {t_torch / t_floor:.1f}x the floor")
    print(f"  Numba kernel                  {t_numba:.3f}   {t_numba / t_floor:.1f}x the floor")
    print(f"  floor (read once, write once) {t_floor:.3f}")
    print(f"  max |Numba - PyTorch|         {np.abs(out - reference).max():.1e}")
    print(
        f"  per process: import Numba + kernel {t_import:.2f} s, first call {t_first:.2f} s (cached after a first run)"
    )


if __name__ == "__main__":
    main()
