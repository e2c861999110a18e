"""Does float rounding decide the picture? The bundled model on real brackets in float32 against
float64 (what a CPU and a GPU, or two precisions, may disagree on): max |difference| of the fused
images, its 99.9th percentile and the share of pixels 0.01 or more apart, per stack.

    python bench/precision.py [--eps 1e-5] [--brackets ../shared/data/brackets] [--every 2]

--eps sets exposure fusion's epsilon (fusecli.blend._EPS; the shipped value by default) to compare
with another, e.g. 1e-12, the value before the third speed session. Every --every-th stack of the
folder, unaligned (the registration is not what is measured), on the CPU.
"""

import argparse
import sys
from pathlib import Path

import common
import torch

import fusecli.blend as blend
from fusecli.discover import discover
from fusecli.model import load_model
from fusecli.stack import StackOptions, open_stack

BRACKETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brackets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=blend._EPS)
    ap.add_argument("--brackets", type=Path, default=BRACKETS)
    ap.add_argument("--every", type=int, default=2)
    a = ap.parse_args()
    if not a.brackets.is_dir():
        sys.exit(f"{a.brackets} is absent: this benchmark needs ../shared beside the checkout")
    blend._EPS = a.eps
    print(common.describe())
    print(f"exposure fusion's epsilon {a.eps:g}; float32 against float64, the bundled model, CPU")
    single, double = load_model()[0], load_model()[0].double()
    print(f"{'stack':<28}{'max':>10}{'p99.9':>10}{'>= 0.01':>10}")
    worst = 0.0
    for source in discover([a.brackets])[:: a.every]:
        stack = open_stack(source, StackOptions(align="none"))
        x, r = torch.from_numpy(stack.frames)[None], torch.tensor([stack.ratios])
        shown = torch.tensor([float(stack.transfer == "srgb")])
        with torch.inference_mode():
            f32 = single(x, r, None, None, False, shown)[0]
            f64 = double(x.double(), r.double(), None, None, False, shown.double())[0].float()
        d = (f32 - f64).abs().flatten()
        p999 = d.kthvalue(max(1, int(d.numel() * 0.999))).values.item()
        worst = max(worst, d.max().item())
        print(f"{source.name:<28}{d.max().item():>10.2e}{p999:>10.2e}{(d >= 0.01).float().mean().item():>10.1e}")
    print(f"largest difference: {worst:.2e}")


if __name__ == "__main__":
    main()
