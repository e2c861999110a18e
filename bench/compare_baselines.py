"""The default model against OpenCV's MergeMertens and the best single exposure on held-out stacks.

    python bench/compare_baselines.py [--model PATH] [--count 12] [--seed 20000]

Scored as ``fusecli eval`` scores (fusecli.evaluate.score). Held-out stacks are synthesised in memory
from Cannon.exr (never trained on) and procedural scenes, with seeds that neither training (0),
validation (10000) nor samples/ (7) use, 3 frames at 1, 1/4, 1/16, 128 x 128 packed RAW. Every
method is scored against the label with the seed's loss (black_reg
needs fusion weights, so "total" here leaves it out for every method, and the model's black_reg is
shown apart), PSNR and SSIM, plus MEF-SSIM (3 scales) against the stack (no label needed).
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402  (after common: it sets OMP_WAIT_POLICY first)
from common import describe  # noqa: E402

from fusecli.baselines import best_single, mertens  # noqa: E402
from fusecli.dataset import synth_samples  # noqa: E402
from fusecli.evaluate import Prediction, score  # noqa: E402
from fusecli.losses import LossConfig  # noqa: E402
from fusecli.model import load_model  # noqa: E402

CANNON = Path(__file__).resolve().parents[2] / "shared/data/real/hdr_radiance_openexr_cannon/Cannon.exr"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=20000)
    a = ap.parse_args()
    print(describe())
    if not CANNON.exists():
        sys.exit(f"{CANNON} is absent: this comparison needs ../shared beside the checkout")
    model, sidecar = load_model(a.model)
    loss = LossConfig(**sidecar.get("loss", {}))
    samples = synth_samples([str(CANNON)], a.count // 2, a.count - a.count // 2, 256, a.seed)
    results: dict[str, list[dict]] = {"model": [], "mertens": [], "best single": [], "uniform": []}
    for s in samples:
        frames, label = np.array(s.frames), np.array(s.label)
        with torch.inference_mode():
            fused, weights = model(torch.from_numpy(frames)[None], torch.from_numpy(np.array(s.ratios))[None])
        predictions = {
            "model": Prediction(fused[0].numpy(), weights[0].numpy()),
            "mertens": Prediction(mertens(frames)),
            "best single": Prediction(best_single(frames, label)[1]),
            "uniform": Prediction(frames.mean(axis=0)),
        }
        for method, pred in predictions.items():
            results[method].append(score(pred, frames, label, loss))
    keys = ["total", "l1", "psnr", "ssim", "mef_ssim", "black_reg"]
    print(
        f"{len(samples)} held-out stacks ({a.count // 2} Cannon.exr crops, {a.count - a.count // 2} "
        f"procedural), seed {a.seed}; mean over stacks"
    )
    print(f"{'method':<14}" + "".join(f"{k:>11}" for k in keys))
    for method, rows in results.items():
        cells = "".join(
            f"{statistics.mean(r[k] for r in rows):>11.4f}" if rows[0][k] is not None else f"{'-':>11}" for k in keys
        )
        print(f"{method:<14}{cells}")
    print("total = l1 + gradient_l1 + gamma*grad_sign + eta*high_smooth + lambda_luma*luma_grad (black_reg apart)")


if __name__ == "__main__":
    main()
