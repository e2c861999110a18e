"""Would frames kept in their decoded integer type (uint16) until the full-resolution stage make the
CPU faster? The two reads of the frames that fusion makes, each on float32 frames and on uint16
frames converted band by band as a uint16 design must, at the Mertens benchmark's 12 MP:

    python bench/integer_frames.py [--megapixels 12] [--repeat 5]

"area-down" is the blend-size downsample (``blend.area_down``, factor 5 at 12 MP); "detail" is the
full-resolution pass's arithmetic (``FuseNet._detail``: per band, each frame times its upsampled
weight, summed into the output; the weights here are random, the upsampling left out as it does not
depend on the frames' type), with uint16 frames either converted per band (``.float()``) or handed
to ``addcmul`` as they are (PyTorch casts inside the kernel). "read" is one pass over the frames
(a sum over frames): the traffic each type costs on its own. The frames are random; the timings do
not depend on their values.
"""

import argparse

import common
import torch

from fusecli.blend import area_down
from fusecli.model import detail_rows

SCALE = 1 / 65535


def area_down_u16(frames: torch.Tensor, factor: int, rows: int) -> torch.Tensor:
    """area_down of (N, M, H, W) uint16 frames, each band of ``rows`` (a multiple of factor) as float32."""
    bands = [area_down(frames[..., y : y + rows, :].float() * SCALE, factor) for y in range(0, frames.shape[-2], rows)]
    return torch.cat(bands, dim=-2)


def detail(frames: torch.Tensor, weights: torch.Tensor, rows: int, convert: bool) -> torch.Tensor:
    """The full-resolution pass's sums: frames (1, K, C, H, W) float32 or uint16, weights (1, K, rows, W)."""
    _, k, c, h, w = frames.shape
    out = torch.empty(1, c, h, w)
    scale = SCALE if frames.dtype == torch.uint16 else 1.0
    for y0 in range(0, h, rows):
        r = slice(y0, min(h, y0 + rows))
        band = torch.zeros(1, c, r.stop - r.start, w)
        wk = weights[:, :, : r.stop - r.start] * scale
        for j in range(k):
            x = frames[:, j, :, r]
            band.addcmul_(wk[:, j : j + 1], x.float() if convert else x)
        out[..., r, :] = band
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(common.describe())
    h = int(round((a.megapixels * 1e6 * 3 / 4) ** 0.5))
    w = int(round(h * 4 / 3))
    torch.manual_seed(0)
    f32 = torch.rand(1, 3, 3, h, w)
    u16 = (f32 * 65535).round_().to(torch.uint16)
    rows = detail_rows(w, 3, 3)
    weights = torch.rand(1, 3, rows, w)
    factor = 5
    band = rows - rows % factor
    with torch.inference_mode():
        timings = {
            "read (sum over frames)": (
                common.median_seconds(lambda: f32.sum(dim=1), a.repeat),
                common.median_seconds(lambda: u16.sum(dim=1, dtype=torch.float32), a.repeat),
                None,
            ),
            f"area-down (factor {factor})": (
                common.median_seconds(lambda: area_down(f32.flatten(0, 1), factor), a.repeat),
                common.median_seconds(lambda: area_down_u16(u16.flatten(0, 1), factor, band), a.repeat),
                None,
            ),
            f"detail (bands of {rows} rows)": (
                common.median_seconds(lambda: detail(f32, weights, rows, False), a.repeat),
                common.median_seconds(lambda: detail(u16, weights, rows, True), a.repeat),
                common.median_seconds(lambda: detail(u16, weights, rows, False), a.repeat),
            ),
        }
    mib = f"float32 {f32.nbytes / 2**20:.0f} MiB, uint16 {u16.nbytes / 2**20:.0f} MiB"
    print(f"{h * w / 1e6:.1f} MP x 3 RGB frames ({mib})")
    print(
        f"{'stage, ms (median of ' + str(a.repeat) + ')':<34}{'float32':>9}{'uint16':>9}{'uint16 cast in kernel':>23}"
    )
    for name, (t32, t16, mixed) in timings.items():
        tail = f"{mixed * 1e3:>23.1f}" if mixed is not None else f"{'':>23}"
        print(f"{name:<34}{t32 * 1e3:>9.1f}{t16 * 1e3:>9.1f}{tail}")


if __name__ == "__main__":
    main()
