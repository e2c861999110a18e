"""Colour in partially clipped highlights: where the 1/1 frame clipped some channels but not all,
how far the fused image's R/G and B/G ratios are from the label's (a magenta cast shows as R/G and
B/G above the label's), per sample stack and model.

    python bench/highlight_colour.py [--model PATH ...] [--stacks samples/]

Pixels counted: the 1/1 frame's largest channel >= 0.999 and its smallest < 0.99. G is the mean of
the two green planes. Medians over those pixels; "l1" is the mean absolute error there.

Results: bench/results/highlight_colour.json.
"""

import argparse
from pathlib import Path

import common
import numpy as np
import torch

from fusecli.discover import discover
from fusecli.fuse import fuse_stack
from fusecli.model import load_model
from fusecli.stack import load_stack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, nargs="*", default=[None], help="model files (default: the bundled one)")
    ap.add_argument("--stacks", type=Path, default=common.SAMPLES)
    a = ap.parse_args()
    print(common.describe())
    print(f"{'model':<24}{'stack':<16}{'pixels':>8}{'R/G fused':>11}{'label':>7}{'B/G fused':>11}{'label':>7}{'l1':>8}")
    rows = []
    for path in a.model:
        model, sidecar = load_model(path)
        name = f"{Path(path).name if path else 'bundled'} ({sidecar['architecture']['weight_mode']})"
        for source in discover([a.stacks]):
            stack = load_stack(source)
            label = stack.read_label()
            fused, _ = fuse_stack(model, stack, torch.device("cpu"), keep_weights=False)
            ref = stack.frames[0]
            partial = (ref.max(axis=0) >= 0.999) & (ref.min(axis=0) < 0.99)
            cells = []
            for img in (fused, label):
                green = np.maximum(0.5 * (img[1] + img[2]), 1e-4)
                cells.append((np.median((img[0] / green)[partial]), np.median((img[3] / green)[partial])))
            l1 = np.abs(fused - label)[:, partial].mean()
            rows.append(
                {
                    "model": name,
                    "stack": source.name,
                    "partly_clipped_share": float(partial.mean()),
                    "rg_fused": float(cells[0][0]),
                    "rg_label": float(cells[1][0]),
                    "bg_fused": float(cells[0][1]),
                    "bg_label": float(cells[1][1]),
                    "l1": float(l1),
                }
            )
            print(
                f"{name:<24}{source.name:<16}{partial.mean():>7.1%} "
                f"{cells[0][0]:>10.3f}{cells[1][0]:>7.3f}{cells[0][1]:>11.3f}{cells[1][1]:>7.3f}{l1:>8.4f}"
            )

    worst = max(abs(r["rg_fused"] / r["rg_label"] - 1) for r in rows)
    common.record(
        "highlight_colour",
        {"rows": rows},
        [
            common.headline(
                "colour of partly clipped highlights on the samples: worst R/G off the label's",
                round(100 * worst, 1),
                "%",
            )
        ],
    )


if __name__ == "__main__":
    main()
