"""GPU fusion throughput: fused megapixels per second at 24 MP (and 12), with the time split into
the host-to-device copy of the frames, the model on the device (its blend-size stage and its
full-resolution pass) and the copy of the result back, in float32 and under bf16 and fp16 autocast;
the device's own copy bandwidth and one read of the frames as floors. Target (the speed issue):
>= 1 gigapixel/s of fused output at 24 MP.

    python bench/bench_gpu.py [--megapixels 1 12 24] [--repeat 20] [--device auto]

Stacks: 3 frames (exposures 1, 1/4, 1/16) of a procedural scene (common.rgb_stack), in
two layouts: "rgb" (3 channels, H x W = the megapixels) and "raw" (packed Bayer, 4 planes of half
the width and height: what a DNG of that many megapixels decodes to). Rows:

- ``host->host``: :func:`fusecli.fuse.fuse_stack` as ``fuse`` calls it per stack (float32 frames in
  host memory in, the fused image in host memory out; float16 autocast on CUDA, weights not kept), from
  ordinary (pageable) memory and from page-locked memory, where ``fuse`` decodes frames for CUDA;
- ``on device``: the model's forward alone on frames already on the device, per precision, and of
  that its full-resolution pass (``FuseNet._detail``) alone;
- ``copy in``: the float32 frames to the device from ordinary (pageable) and from pinned host
  memory, and the same frames as uint16 (half the bytes) from pinned memory, converted there;
- ``copy out``: the fused float32 image back to host memory;
- ``floor``: one read of the frames on the device and one write of an output (the faster of
  ``frames.sum(dim=0)`` and the frames added one by one).

Accuracy: bf16 and fp16 outputs against float32 on the same device, and (first size) the CPU's
float32 against the device's (max |difference| on [0, 1] values, and relative L2). Run on a machine
without CUDA it times the CPU (a check of the script).

Results: bench/results/gpu_<device>.json.
"""

import argparse
import statistics
import time

import common
import numpy as np
import torch

from fusecli.fuse import fuse_stack
from fusecli.model import load_model
from fusecli.runtime import keep_freed_memory, pick_device
from fusecli.stack import Stack, frame_buffer

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def copy_bandwidth(device: torch.device, gib: float = 1.0) -> float:
    """GB/s of a device-to-device copy, bytes read plus bytes written."""
    x = torch.rand(int(gib * 2**30) // 4, device=device)
    y = torch.empty_like(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    t = common.median_seconds(lambda: y.copy_(x), 10, warmup=2, sync=sync)
    return 2 * x.numel() * 4 / t / 1e9


def layouts(megapixels: float) -> dict[str, np.ndarray]:
    """(K, C, H, W) float32 [0, 1] stacks: ``rgb`` of ``megapixels``, and ``raw`` as packed Bayer planes
    (R, G1, G2, B) of a sensor of ``megapixels``."""
    rgb = common.rgb_stack(megapixels)
    k, _, h, w = rgb.shape
    planes = rgb[:, :, : h // 2 * 2 : 2, : w // 2 * 2 : 2]
    raw = np.ascontiguousarray(np.concatenate([planes[:, :1], planes[:, 1:2], planes[:, 1:2], planes[:, 2:]], axis=1))
    return {"rgb": rgb, "raw": raw}


def copies(frames: np.ndarray, device: torch.device, repeat: int, sync) -> list[tuple[str, float]]:
    """(what, seconds) of the copies in and out and of the floor, for one (K, C, H, W) stack."""
    rows = [
        (
            "copy in: float32, pageable",
            common.median_seconds(lambda: torch.from_numpy(frames).to(device), repeat, sync=sync),
        )
    ]
    if device.type == "cuda":
        pinned = torch.from_numpy(frames).pin_memory()
        rows.append(
            (
                "copy in: float32, pinned",
                common.median_seconds(lambda: pinned.to(device, non_blocking=True), repeat, sync=sync),
            )
        )
        ints = torch.from_numpy((frames * 65535 + 0.5).astype(np.uint16)).pin_memory()

        def ints_in() -> None:
            ints.to(device, non_blocking=True).float().mul_(1 / 65535)

        rows.append(("copy in: uint16, pinned, to float there", common.median_seconds(ints_in, repeat, sync=sync)))
    on_device = torch.from_numpy(frames).to(device)
    out = torch.empty(frames.shape[1:], device=device)
    rows.append(("copy out: float32 result, pageable", common.median_seconds(lambda: out.cpu(), repeat, sync=sync)))

    def added() -> None:
        total = on_device[0] + on_device[1]
        for k in range(2, on_device.shape[0]):
            total.add_(on_device[k])

    # the faster of the two (on the CPU the sum's reduction ran at a third of memory speed: bench/README.md)
    floor = min(
        common.median_seconds(lambda: on_device.sum(dim=0), repeat, sync=sync),
        common.median_seconds(added, repeat, sync=sync),
    )
    rows.append(("floor: one read of the frames + one write", floor))
    return rows


def on_device(model, frames: np.ndarray, device: torch.device, repeat: int, sync):
    """(what, seconds) of the model's forward on frames already on the device, per precision, and of its
    full-resolution pass; and each precision's output (1, C, H, W) float32."""
    x = torch.from_numpy(frames)[None].to(device)
    ratios = torch.tensor([common.RATIOS], device=device)
    detail, detail_times = model._detail, []

    def timed_detail(*args, **kwargs):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = detail(*args, **kwargs)
        if sync:
            sync()
        detail_times.append(time.perf_counter() - t0)
        return out

    rows, outputs = [], {}
    for name, dtype in PRECISIONS.items():
        if dtype is not None and device.type != "cuda":
            continue

        @torch.inference_mode()
        def forward(dtype=dtype):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(x, ratios, keep_weights=False)[0]

        model._detail = timed_detail
        detail_times.clear()
        try:
            rows.append((f"on device: model, {name}", common.median_seconds(forward, repeat, sync=sync)))
        finally:
            model._detail = detail
        if len(detail_times) > 1:
            rows.append((f"on device: of which full-res pass, {name}", statistics.median(detail_times[1:])))
        outputs[name] = forward().float()
    return rows, outputs


def compare(label: str, outputs: dict[str, torch.Tensor]) -> None:
    """Print each output's max |difference| and relative L2 against the device's float32 one."""
    ref = outputs["fp32"]
    for name, res in outputs.items():
        if name != "fp32":
            diff = (res - ref).abs().max().item()
            rel = ((res - ref).norm() / ref.norm()).item()
            print(f"{label}: {name} vs fp32 max |diff| {diff:.2e}, relative L2 {rel:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 12.0, 24.0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    keep_freed_memory()
    device = pick_device(a.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    model = load_model(None, device)[0]
    print(common.describe())
    if cuda:
        print(f"device copy: {copy_bandwidth(device):.0f} GB/s (read + write)")
    print(f"median of {a.repeat} runs after one warm-up; MP/s = fused output megapixels per second")
    table = []
    for mp in a.megapixels:
        for kind, frames in layouts(mp).items():
            _, _, h, w = frames.shape
            pixels = h * w * (4 if kind == "raw" else 1)  # output pixels (sensor pixels for raw)
            label = f"{pixels / 1e6:.1f} MP {kind}"
            rows = []
            for memory in ("pageable", "page-locked") if cuda else ("pageable",):
                buffer = frame_buffer(frames.shape, memory == "page-locked")  # as fuse decodes for CUDA
                buffer[:] = frames
                st = Stack(label, buffer, (), common.RATIOS, "user", kind, "linear")
                t = common.median_seconds(
                    lambda st=st: fuse_stack(model, st, device, keep_weights=False), a.repeat, sync=sync
                )
                rows.append((f"host->host: fuse_stack, {memory} frames", t))
                del st, buffer
            rows += copies(frames, device, a.repeat, sync)
            model_rows, outputs = on_device(model, frames, device, a.repeat, sync)
            rows += model_rows
            if cuda:
                try:
                    print(f"{label}: GPU utilisation (driver's last sample period) {torch.cuda.utilization(device)} %")
                except Exception as e:  # no NVML (nvidia-ml-py): no figure
                    print(f"{label}: GPU utilisation not read ({type(e).__name__})")
                if mp == a.megapixels[0]:  # the same stack on the CPU, float32
                    with torch.inference_mode():
                        cpu = load_model(None, "cpu")[0](torch.from_numpy(frames)[None], torch.tensor([common.RATIOS]))[
                            0
                        ]
                    outputs["cpu fp32"] = cpu.to(device)
            compare(label, outputs)
            table += [(label, what, t, pixels) for what, t in rows]
            del outputs
            if cuda:
                torch.cuda.empty_cache()

    print(f"\n{'stack':<16}{'what':<46}{'ms':>9}{'MP/s':>9}")
    for label, what, t, pixels in table:
        print(f"{label:<16}{what:<46}{t * 1e3:>9.2f}{pixels / 1e6 / t:>9.0f}")
    print("target: >= 1000 MP/s (1 gigapixel/s) fused output at 24 MP")
    rows = [
        {"stack": label, "what": what, "ms": t * 1e3, "mp_per_s": pixels / 1e6 / t} for label, what, t, pixels in table
    ]
    biggest = max(a.megapixels)
    memory = "page-locked" if cuda else "pageable"
    headlines = [
        common.headline(
            f"fused output per second, {label}, host to host ({device}, {memory} frames)",
            round(pixels / 1e6 / t),
            "MP/s",
            target=">= 1000 MP/s",
            met=pixels / 1e6 / t >= 1000,
        )
        for (label, what, t, pixels), mp in zip(table, [float(row[0].split()[0]) for row in table])
        if what == f"host->host: fuse_stack, {memory} frames" and mp >= 0.9 * biggest
    ]
    common.record(f"gpu_{device.type}", {"rows": rows}, headlines)


if __name__ == "__main__":
    main()
