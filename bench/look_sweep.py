"""The fusion's look on the real brackets, knob by knob: MEF-SSIM against global contrast.

    python bench/look_sweep.py [--brackets ../shared/data/brackets]

Every bracket is opened once (default alignment) and fused by the bundled model under each variant
of what sets the look: the pyramid's depth (its coarsest level about 8 px, as fusecli blends, down to
1 px, as OpenCV's MergeMertens does), the strength of the learned correction for camera-JPEG stacks
(the sidecar's display_correction), and the exponent of exposure fusion's contrast measure. Each is
scored as bench/real_brackets.py scores (MEF-SSIM of the display-referred luma at 1024 px, global
contrast at 256 px, wins over OpenCV's MergeMertens), on the tuning half and the held-out half of
real_brackets.split. A deeper pyramid keeps the scene's global contrast and loses MEF-SSIM, which
rewards local structure: the trade the issue on the fusion's look is about.

Results: bench/results/look_sweep.json.
"""

import argparse
import dataclasses
import statistics

import common
import numpy as np
import torch
from real_brackets import split

import fusecli.blend as blend
import fusecli.model as fusion_model
from fusecli.baselines import mertens_display
from fusecli.develop import display
from fusecli.discover import discover
from fusecli.evaluate import contrast_display, mef_scorer, mef_ssim_display
from fusecli.fuse import fuse_stack
from fusecli.model import load_model
from fusecli.stack import StackOptions, open_stack

#: (name, pyramid's smallest side, display_correction, contrast exponent)
VARIANTS = [
    ("as shipped", 8, None, 1.0),
    ("no correction", 8, 0.0, 1.0),
    ("full correction", 8, 1.0, 1.0),
    ("pyramid to 4 px", 4, None, 1.0),
    ("pyramid to 2 px", 2, None, 1.0),
    ("pyramid to 1 px", 1, None, 1.0),
    ("contrast^2", 8, None, 2.0),
]


def _log_weight(exponent: float):
    """exposure fusion's log weight with the contrast measure raised to ``exponent``."""

    def log_weight(encoded: torch.Tensor) -> torch.Tensor:
        contrast, saturation, exposed = blend._measures(encoded)
        out = exponent * (contrast + blend._EPS).log() + exposed
        if saturation is not None:
            out = out + (saturation + blend._EPS).log()
        return out[:, :, None]

    return log_weight


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brackets", default=common.BRACKETS)
    a = ap.parse_args()
    common.need(a.brackets, "this benchmark")
    print(common.describe())
    stacks = [open_stack(s, StackOptions()) for s in discover([a.brackets])]
    shown = {s.name: [display(f, s) for f in s.frames] for s in stacks}
    scorers = {n: mef_scorer(np.stack(f)) for n, f in shown.items()}
    mertens = {n: mertens_display(np.stack(f)) for n, f in shown.items()}
    base = {n: (mef_ssim_display(scorers[n], m), contrast_display(m)) for n, m in mertens.items()}
    levels, log_weight = blend.pyramid_levels, fusion_model.exposure_log_weight
    halves = split(shown)
    rows = {}
    for name, smallest, correction, exponent in VARIANTS:
        model = load_model()[0]
        if correction is not None:
            model.config = dataclasses.replace(model.config, display_correction=correction)
        blend.pyramid_levels = lambda h, w, s=smallest: levels(h, w, s)
        fusion_model.exposure_log_weight = _log_weight(exponent) if exponent != 1.0 else log_weight
        scores = {}
        for stack in stacks:
            fused = display(fuse_stack(model, stack, torch.device("cpu"))[0], stack)
            scores[stack.name] = (mef_ssim_display(scorers[stack.name], fused), contrast_display(fused))
        blend.pyramid_levels, fusion_model.exposure_log_weight = levels, log_weight
        rows[name] = {}
        for part, names in halves.items():
            rows[name][part] = {
                "mef_ssim": round(statistics.fmean(scores[n][0] for n in names), 4),
                "global_contrast": round(statistics.fmean(scores[n][1] for n in names), 4),
                "wins_over_mertens": sum(scores[n][0] > base[n][0] for n in names),
                "stacks": len(names),
            }
        print(
            f"{name:<18}"
            + "  ".join(
                f"{p}: {r['mef_ssim']:.4f} / {r['global_contrast']:.3f} / {r['wins_over_mertens']}-{r['stacks']}"
                for p, r in rows[name].items()
            )
        )
    mertens_rows = {
        part: {
            "mef_ssim": round(statistics.fmean(base[n][0] for n in names), 4),
            "global_contrast": round(statistics.fmean(base[n][1] for n in names), 4),
        }
        for part, names in halves.items()
    }
    print(f"{'Mertens':<18}{mertens_rows}")
    common.record("look_sweep", {"variants": rows, "mertens": mertens_rows, "halves": halves})


if __name__ == "__main__":
    main()
