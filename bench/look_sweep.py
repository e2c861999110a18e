"""The fusion's look on the real brackets, knob by knob: MEF-SSIM against global contrast.

    python bench/look_sweep.py [--brackets ../shared/data/brackets]

Every bracket is opened once (default alignment) and fused by the bundled model under each variant
of what sets the look: the structural blend (blend.structure_blend) or the plain pyramid blend, the
depth of the tone's pyramid (its coarsest level about 8 px down to 1 px, as OpenCV's MergeMertens
blends), the strength of the learned correction for camera-JPEG stacks (the sidecar's
display_correction), and the power of the structure weights. Each is scored as
bench/real_brackets.py scores (MEF-SSIM of the display-referred luma at 1024 px, global contrast at
256 px, wins over OpenCV's MergeMertens), on the tuning half and the held-out half of
real_brackets.split. A deeper tone keeps the scene's global contrast and costs MEF-SSIM where it
pushes detail into black or white; the plain blend loses contrast wherever the frames' patches differ
in it. The shipped settings are those with the best MEF-SSIM on the tuning half among the ones whose
global contrast there is at least Mertens's.

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

#: (name, the tone pyramid's smallest side, display_correction, structure power or None for the
#: plain pyramid blend)
VARIANTS = [
    ("as shipped", blend.TONE_SMALLEST, None, blend.STRUCTURE_POWER),
    ("plain blend, 8 px", 8, None, None),
    ("plain blend, 2 px", 2, None, None),
    ("tone to 8 px", 8, None, blend.STRUCTURE_POWER),
    ("tone to 4 px", 4, None, blend.STRUCTURE_POWER),
    ("tone to 1 px", 1, None, blend.STRUCTURE_POWER),
    ("no correction", blend.TONE_SMALLEST, 0.0, blend.STRUCTURE_POWER),
    ("full correction", blend.TONE_SMALLEST, 1.0, blend.STRUCTURE_POWER),
    ("structure power 4", blend.TONE_SMALLEST, None, 4.0),
]


def _blend(smallest: int, power: float | None):
    """The fusion's blend with the tone's pyramid down to ``smallest`` px and structure weights to
    ``power`` (None: the plain pyramid blend to that depth)."""

    def blend_fn(frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        levels = blend.pyramid_levels(*frames.shape[-2:], smallest)
        if power is None:
            return blend.pyramid_blend(frames, weights, levels)
        return blend.structure_blend(frames, weights, power=power, levels=levels)

    return blend_fn


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
    shipped = fusion_model.structure_blend
    halves = split(shown)
    rows = {}
    for name, smallest, correction, power in VARIANTS:
        model = load_model()[0]
        if correction is not None:
            model.config = dataclasses.replace(model.config, display_correction=correction)
        fusion_model.structure_blend = _blend(smallest, power)
        scores = {}
        for stack in stacks:
            fused = display(fuse_stack(model, stack, torch.device("cpu"))[0], stack)
            scores[stack.name] = (mef_ssim_display(scorers[stack.name], fused), contrast_display(fused))
        fusion_model.structure_blend = shipped
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
