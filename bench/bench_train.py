"""Training throughput: samples/s of ``fusecli train`` at the default model's crop, batch size and
architecture (models/default.toml), on the CPU and, when there is one, on the GPU.

    python bench/bench_train.py [--steps 60] [--device auto|cpu|cuda] [--workers N]

Data: procedural scenes synthesised in memory (no files needed), as packed-RAW brackets and as
display-referred RGB brackets of 3 and 5 frames, at the default recipe's crop (models/default.toml);
the radiance maps of the recipe are left out. The figure is samples/s over the steps after the first
10 (warm-up), as the training log records it; the optimiser, loss and data loading are the real ones.
On CUDA it also prints the GPU's utilisation over those steps (NVML, through torch.cuda.utilization).
"""

import argparse
import json
import tempfile
from pathlib import Path

import common
import torch

from fusecli.runtime import keep_freed_memory
from fusecli.train import TrainConfig, apply_overrides, train

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "default.toml"
WARMUP = 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    keep_freed_memory()
    print(common.describe())
    cfg = TrainConfig.from_toml(DEFAULT)
    sets = [
        f"steps={a.steps + WARMUP}",
        f'device="{a.device}"',
        "val_every=100000",
        "ckpt_every=100000",
        "data.synth_radiance=[]",
        "data.val_radiance=[]",
        "data.synth_procedural=16",
        "data.synth_val=0",
        "data.display_radiance=[]",
        "data.display_procedural=16",
        "data.display_val=0",
    ]
    if a.workers is not None:
        sets.append(f"data.workers={a.workers}")
    cfg = apply_overrides(cfg, sets)
    times: list[float] = []
    busy: list[int] = []  # GPU utilisation, %, read by the driver over its last sample period

    def on_step(step: int, record: dict) -> None:
        import time

        times.append(time.perf_counter())
        if len(times) > WARMUP and torch.cuda.is_available():
            try:
                busy.append(torch.cuda.utilization())
            except Exception:  # no NVML (nvidia-ml-py): no figure
                pass

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", on_step=on_step)
        log = [json.loads(line) for line in open(Path(tmp) / "run" / "log.jsonl")]
    steps = len(times) - WARMUP
    rate = steps * cfg.batch_size / (times[-1] - times[WARMUP - 1])
    print(
        f"weight_mode {cfg.model.weight_mode}, batch {cfg.batch_size}, crop {cfg.data.crop}, workers "
        f"{cfg.data.workers}, device {cfg.device}"
    )
    print(
        f"{rate:.1f} samples/s over steps {WARMUP + 1}..{len(times)} (log's running figure at the end: "
        f"{log[-1]['samples_per_s']:.1f})"
    )
    if busy:
        print(f"GPU utilisation over those steps: mean {sum(busy) / len(busy):.0f} %, min {min(busy)} %")
    device = "cuda" if torch.cuda.is_available() and a.device != "cpu" else "cpu"
    common.record(
        f"train_{device}",
        {
            "samples_per_s": rate,
            "steps": steps,
            "batch_size": cfg.batch_size,
            "crop": cfg.data.crop,
            "workers": cfg.data.workers,
            "weight_mode": cfg.model.weight_mode,
            "gpu_utilisation_mean": sum(busy) / len(busy) if busy else None,
        },
        [
            common.headline(
                f"train throughput on {device}, default recipe on procedural data (batch {cfg.batch_size}, "
                f"{cfg.data.crop} px crops)",
                round(rate, 1),
                "samples/s",
            )
        ],
    )


if __name__ == "__main__":
    main()
