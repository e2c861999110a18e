"""torch.compile for the full-resolution pass, tried on the CPU: a band of rows written as one
expression (horizontal interpolation by index, the frames' weighted sum), compiled by inductor
(C++/OpenMP), against the same expression eager and against fusecli's own pass (FuseNet._detail).

    python bench/compile_detail.py [--megapixels 12] [--repeat 3]

Prints the compile time (the first call, a cold cache) and the median time per stack of each.
"""

import argparse
import time

import common
import torch

from fusecli.model import FuseNet, _interp_rows


def columns(width: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of ``width`` output columns, its two input columns of ``w`` and the second's weight."""
    x = torch.arange(width, dtype=torch.float64)
    pos = ((x + 0.5) * (w / width) - 0.5).clamp_(0, w - 1)
    lo = pos.floor().long()
    return lo, (lo + 1).clamp_(max=w - 1), (pos - lo).float()


def band(low, coef, frames, lo, hi, lam):
    """low (1, C, r, w), coef (1, K, r, w), frames (1, K, C, r, W) -> (1, C, r, W)."""
    low_w = low[..., lo] * (1 - lam) + low[..., hi] * lam
    coef_w = coef[..., lo] * (1 - lam) + coef[..., hi] * lam
    return low_w + (coef_w[:, :, None] * frames).sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(common.describe())
    h = int(round((a.megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(h * 4 / 3))
    hb, wb = round(h * 800 / w), 800
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, 3, h, w, generator=g)
    coef, low = torch.rand(1, 3, hb, wb, generator=g), torch.rand(1, 3, hb, wb, generator=g)
    lo, hi, lam = columns(w, wb)
    compiled = torch.compile(band, dynamic=True)
    step = 399

    def banded(fn) -> torch.Tensor:
        out = torch.empty(1, 3, h, w)
        for y0 in range(0, h, step):
            rows = slice(y0, min(h, y0 + step))
            r0, r1, fr = _interp_rows(rows, h, hb, low)
            low_t = torch.lerp(low.index_select(2, r0), low.index_select(2, r1), fr[:, None])
            coef_t = torch.lerp(coef.index_select(2, r0), coef.index_select(2, r1), fr[:, None])
            out[..., rows, :] = fn(low_t, coef_t, frames[:, :, :, rows], lo, hi, lam)
        return out

    t0 = time.perf_counter()
    with torch.inference_mode():
        first = banded(compiled)
        print(
            f"compile + first call: {time.perf_counter() - t0:.1f} s; max |compiled - eager| "
            f"{(first - banded(band)).abs().max().item():.1e}"
        )
        model = FuseNet()
        for name, fn in (
            ("the expression, eager", lambda: banded(band)),
            ("the expression, compiled", lambda: banded(compiled)),
            ("fusecli's pass (FuseNet._detail)", lambda: model._detail(frames, coef, low, None, None)),
        ):
            print(f"{name:<36}{common.median_seconds(fn, a.repeat):.3f} s")


if __name__ == "__main__":
    main()
