"""Forward + backward time of the full training loss (every term) on a large batch.

    python bench/bench_losses.py [--batch 16] [--size 512] [--frames 3] [--device cpu|cuda]
                                 [--system-malloc]

Prints the median of --repeat timed runs after two warm-ups, per weight mode (per frame: 1 weight
channel; per frame and channel: 4): the loss alone (fused image and weights as leaf tensors), and
with the softmax and weighted sum that produce them. ``--system-malloc`` leaves glibc's default
allocator behaviour (see fusecli/runtime.py) to show what it costs.

Results: bench/results/losses_<device>[_system-malloc].json.
"""

import argparse

import common
import torch

from fusecli.losses import FusionLoss
from fusecli.runtime import keep_freed_memory


def run(batch: int, size: int, k: int, cw: int, *, device: str, repeat: int, loss_only: bool) -> float:
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(batch, k, 4, size, size, generator=g).to(device)
    label = torch.rand(batch, 4, size, size, generator=g).to(device)
    logits = torch.randn(batch, k, cw, size, size, generator=g).to(device).requires_grad_()
    if loss_only:
        leaf_weights = torch.softmax(logits, dim=1).detach().requires_grad_()
        leaf_fused = (leaf_weights * frames).sum(dim=1).detach().requires_grad_()
    loss = FusionLoss()

    def step() -> None:
        if loss_only:
            weights, fused = leaf_weights, leaf_fused
        else:
            weights = torch.softmax(logits, dim=1)
            fused = (weights * frames).sum(dim=1)
        total, _ = loss(fused, label, frames, weights)
        total.backward()
        logits.grad = weights.grad = fused.grad = None

    # two warm-up runs: the heap grows to its working size
    return common.median_seconds(step, repeat, warmup=2, sync=torch.cuda.synchronize if device == "cuda" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--system-malloc", action="store_true", help="do not call keep_freed_memory()")
    a = ap.parse_args()
    allocator = "glibc default" if a.system_malloc else f"keep_freed_memory()={keep_freed_memory()}"
    print(common.describe())
    print(
        f"loss forward+backward, batch {a.batch} x 4 x {a.size} x {a.size}, K = {a.frames}, device "
        f"{a.device}, allocator {allocator}"
    )
    print(f"{'weights':<32}{'loss only s':>12}{'+softmax+sum s':>16}")
    rows = {}
    for cw, name in ((1, "per frame (B,K,1,H,W)"), (4, "per frame+channel (B,K,4,H,W)")):
        only = run(a.batch, a.size, a.frames, cw, device=a.device, repeat=a.repeat, loss_only=True)
        full = run(a.batch, a.size, a.frames, cw, device=a.device, repeat=a.repeat, loss_only=False)
        print(f"{name:<32}{only:>12.3f}{full:>16.3f}")
        rows[name] = {"loss_only_s": only, "with_softmax_and_sum_s": full}
    shape = f"{a.batch} x 4 x {a.size} x {a.size}, K = {a.frames}"
    suffix = "_system-malloc" if a.system_malloc else ""
    common.record(
        f"losses_{a.device}{suffix}",
        {"shape": shape, "device": a.device, "allocator": allocator, "weights": rows},
        [
            common.headline(
                f"full loss forward + backward, {shape}, per-channel weights, {a.device}, {allocator}",
                round(rows["per frame+channel (B,K,4,H,W)"]["loss_only_s"], 3),
                "s",
            )
        ],
    )


if __name__ == "__main__":
    main()
