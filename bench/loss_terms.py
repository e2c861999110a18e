"""Magnitudes of every loss term on labelled stacks, for simple fusions (why LossConfig's defaults).

    python bench/loss_terms.py [STACK_FOLDERS...]   (default: samples/)

For each stack: the 1/1 frame alone (all weight on frame 0), the darkest frame alone, and uniform
weights. Prints each raw term and its weighted contribution to the total under the defaults.
"""

import argparse
from pathlib import Path

import torch

from fusecli.discover import discover
from fusecli.losses import FusionLoss, LossConfig
from fusecli.stack import load_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path, help="stack folders (default: samples/)")
    paths = ap.parse_args().folders or [Path(__file__).resolve().parents[1] / "samples"]
    cfg = LossConfig()
    scale = {
        "l1": 1,
        "gradient_l1": 1,
        "grad_sign": cfg.gamma,
        "high_smooth": cfg.eta,
        "luma_grad": cfg.lambda_luma,
        "black_reg": cfg.lambda_black,
    }
    print(f"defaults: {cfg}")
    print(f"{'stack':<16}{'fusion':<10}" + "".join(f"{t:>16}" for t in scale) + f"{'total':>9}")
    for source in discover(paths):
        stack = load_stack(source)
        frames = torch.from_numpy(stack.frames)[None]
        label = torch.from_numpy(stack.read_label())[None]
        k = frames.shape[1]
        for name, w in (
            ("1/1 only", torch.eye(k)[0]),
            ("darkest", torch.eye(k)[-1]),
            ("uniform", torch.full((k,), 1 / k)),
        ):
            weights = w.view(1, k, 1, 1, 1).expand(1, k, 1, *frames.shape[-2:])
            fused = (weights * frames).sum(1)
            total, terms = FusionLoss(cfg)(fused, label, frames, weights)
            cells = "".join(f"{f'{terms[t].item():.1e}/{scale[t] * terms[t].item():.3f}':>16}" for t in scale)
            print(f"{stack.name:<16}{name:<10}{cells}{total.item():>9.4f}")
    print("each cell: raw term / weighted contribution")


if __name__ == "__main__":
    main()
