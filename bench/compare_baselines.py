"""The default model against OpenCV's MergeMertens and the best single exposure on held-out stacks.

    python bench/compare_baselines.py [--model PATH] [--count 12] [--seed 20000]

Held-out stacks are synthesised in memory from Cannon.exr (never trained on) and procedural scenes,
with seeds that neither training (0), validation (10000) nor samples/ (7) use, 3 frames at 1, 1/4,
1/16, 128 x 128 packed RAW. Every method is scored against the label with the seed's loss (black_reg
needs fusion weights, so "total" here leaves it out for every method, and the model's black_reg is
shown apart), PSNR and SSIM, plus MEF-SSIM against the stack (no label needed).
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import describe  # noqa: E402

from fusecli.baselines import best_single, mertens  # noqa: E402
from fusecli.losses import FusionLoss, LossConfig  # noqa: E402
from fusecli.metrics import mef_ssim, psnr, ssim  # noqa: E402
from fusecli.model import load_model  # noqa: E402
from fusecli.train import synth_samples  # noqa: E402

CANNON = Path(__file__).resolve().parents[2] / "shared/data/real/hdr_radiance_openexr_cannon/Cannon.exr"


def score(fused: np.ndarray, sample, loss: FusionLoss, weights: torch.Tensor | None) -> dict:
    y = torch.from_numpy(np.ascontiguousarray(fused, dtype=np.float32))[None]
    label = torch.from_numpy(np.array(sample.label))[None]
    frames = torch.from_numpy(np.array(sample.frames))[None]
    k = frames.shape[1]
    w = weights if weights is not None else torch.full((1, k, 1, *y.shape[-2:]), 1 / k)
    _, terms = loss(y, label, frames, w)
    cfg = loss.config
    total = terms["l1"] + terms["gradient_l1"] + cfg.gamma * terms["grad_sign"] + cfg.eta * terms["high_smooth"] + cfg.lambda_luma * terms["luma_grad"]
    out = {"total": float(total), "l1": float(terms["l1"]), "psnr": float(psnr(y, label)), "ssim": float(ssim(y, label)), "mef_ssim": float(mef_ssim(frames, y, levels=2))}
    if weights is not None:
        out["black_reg"] = float(terms["black_reg"])
    return out


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
    loss = FusionLoss(LossConfig(**sidecar.get("loss", {})))
    samples = synth_samples([str(CANNON)], a.count // 2, a.count - a.count // 2, 256, a.seed)
    results: dict[str, list[dict]] = {"model": [], "mertens": [], "best single": [], "uniform": []}
    for s in samples:
        frames = torch.from_numpy(np.array(s.frames))[None]
        with torch.inference_mode():
            fused, weights = model(frames, torch.from_numpy(np.array(s.ratios))[None])
        results["model"].append(score(fused[0].numpy(), s, loss, weights))
        results["mertens"].append(score(mertens(np.array(s.frames)), s, loss, None))
        results["best single"].append(score(best_single(np.array(s.frames), np.array(s.label))[1], s, loss, None))
        results["uniform"].append(score(np.array(s.frames).mean(axis=0), s, loss, None))
    keys = ["total", "l1", "psnr", "ssim", "mef_ssim", "black_reg"]
    print(f"{len(samples)} held-out stacks ({a.count // 2} Cannon.exr crops, {a.count - a.count // 2} procedural), seed {a.seed}; mean over stacks")
    print(f"{'method':<14}" + "".join(f"{k:>11}" for k in keys))
    for method, rows in results.items():
        cells = "".join(f"{statistics.mean(r[k] for r in rows):>11.4f}" if k in rows[0] else f"{'-':>11}" for k in keys)
        print(f"{method:<14}{cells}")
    print("total = l1 + gradient_l1 + gamma*grad_sign + eta*high_smooth + lambda_luma*luma_grad (black_reg apart)")


if __name__ == "__main__":
    main()
