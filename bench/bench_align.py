"""Handheld brackets: registration error against known motion, and fusion quality with and without
alignment and deghosting, against OpenCV's AlignMTB and hugin's align_image_stack before the same
fusion; with timings.

    python bench/bench_align.py [--stacks 4] [--size 1024x768] [--seed 30] [--procedural-only]
                                [--registration-only]

Three sets of brackets are synthesised (fusecli.synth; half from Cannon.exr when ../shared is there,
half procedural), 3 frames at 1, 1/4, 1/16: "shift" (each later frame moved by up to 6 mosaic pixels,
3 packed), "shift+turn" (the same and turned by up to 0.5 degrees), "object" (up to 4 pixels and a
small object that moves between frames). Registration error: for translation, the distance between
the found and the true motion of the image centre; for homography, the mean distance over the image
between where the found and the true warp send a point (packed-plane pixels). Fusion is always the
bundled model; "object l1" is the mean absolute error to the label within the moving object's
discs, "l1" everywhere. AlignMTB (Ward 2003: median-threshold bitmaps, integer translations) runs on
8-bit renderings of each frame's normalised brightness; align_image_stack (Debian hugin-tools:
control points + optimiser) on 16-bit linear RGB made of the packed planes (G = the greens' mean),
its warped RGB mapped back to the four planes. For all three, pixels left uncovered take the
reference's at the frame's exposure, as fusecli does.
Either is skipped with a message if missing. ``--procedural-only`` leaves Cannon.exr out (it is too
small for mosaics of over about 1600 px); ``--registration-only`` stops after the first table (large
sizes: 4400x3000 mosaics, packed 2200x1500, are registered from each frame's half summary).

Results: bench/results/align[_WxH][_registration].json.
"""

import argparse
import json
import math
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import common
import cv2
import numpy as np
import tifffile
import torch

from fusecli import align
from fusecli.discover import discover
from fusecli.evaluate import Case, Prediction, score
from fusecli.fuse import fuse_stack
from fusecli.losses import LossConfig
from fusecli.model import load_model
from fusecli.stack import load_stack, register
from fusecli.synth import SynthConfig, synthesise

CANNON = Path(__file__).resolve().parents[2] / "shared/data/real/hdr_radiance_openexr_cannon/Cannon.exr"
SETS = {
    "shift": dict(shift=6.0),
    "shift+turn": dict(shift=6.0, rotate=0.5),
    "object": dict(shift=4.0, moving_object=True),
}


def true_warp(t: dict, h: int, w: int) -> np.ndarray:
    cx, cy = (w - 1) / 2, (h - 1) / 2
    c, s = math.cos(math.radians(t["rotation_deg"])), math.sin(math.radians(t["rotation_deg"]))
    return np.array([[c, -s, cx - c * cx + s * cy + t["dx"]], [s, c, cy - s * cx - c * cy + t["dy"]], [0, 0, 1]])


def grid_error(a: np.ndarray, b: np.ndarray, h: int, w: int) -> float:
    ys, xs = np.mgrid[0:h:8, 0:w:8]
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    pa, pb = a @ p, b @ p
    return float(np.hypot(*(pa[:2] / pa[2] - pb[:2] / pb[2])).mean())


def align_mtb(frames: np.ndarray, ratios) -> np.ndarray:
    """OpenCV AlignMTB on 8-bit renderings of the normalised brightness; integer shifts, borders
    from the reference."""
    grey = [np.ascontiguousarray(np.clip(f.mean(axis=0) ** (1 / 2.2) * 255, 0, 255).astype(np.uint8)) for f in frames]
    mtb = cv2.createAlignMTB()
    out = frames.copy()
    for k in range(1, len(frames)):
        dx, dy = mtb.calculateShift(grey[0], grey[k])  # shift that moves frame k onto the reference
        m = np.array([[1.0, 0, -dx], [0, 1.0, -dy], [0, 0, 1]])  # reference pixel -> frame pixel
        out[k] = align.warp_frame(frames[k], m)[0]
    return out


def align_hugin(frames: np.ndarray, ratios, tmp: Path) -> np.ndarray | None:
    exe = shutil.which("align_image_stack")
    if exe is None:
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    names = []
    for k, f in enumerate(frames):
        rgb = np.stack([f[0], 0.5 * (f[1] + f[2]), f[3]], axis=-1)
        names.append(str(tmp / f"in{k}.tif"))
        tifffile.imwrite(names[-1], np.round(rgb * 65535).astype(np.uint16), photometric="rgb")
    r = subprocess.run([exe, "-l", "--use-given-order", "-a", str(tmp / "al_"), *names], capture_output=True)
    out = frames.copy()
    for k in range(1, len(frames)):
        path = tmp / f"al_{k:04d}.tif"
        if r.returncode != 0 or not path.exists():
            return frames.copy()
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)  # LZW TIFF, BGR(A)
        rgb, alpha = img[..., 2::-1] / 65535, (img[..., 3] > 0 if img.shape[-1] > 3 else np.ones(img.shape[:2], bool))
        planes = np.clip(np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 1], rgb[..., 2]]), 0, 1)
        planes[:, ~alpha] = np.minimum(frames[0][:, ~alpha] * np.float32(ratios[k] / ratios[0]), 1)
        out[k] = planes
    return out


def object_mask(meta: dict, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), bool)
    for cx, cy in meta["centres"]:
        m |= (xx - cx) ** 2 + (yy - cy) ** 2 <= (meta["radius"] * 1.3) ** 2
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=4, help="per set")
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--seed", type=int, default=30)
    ap.add_argument("--procedural-only", action="store_true", help="no Cannon.exr stacks")
    ap.add_argument("--registration-only", action="store_true", help="the registration table alone")
    a = ap.parse_args()
    width, height = map(int, a.size.split("x"))
    print(common.describe())
    model, sidecar = load_model()
    loss = LossConfig(**sidecar["loss"])
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (name, extra) in enumerate(SETS.items()):
            cfg = SynthConfig(width=width, height=height, **extra)
            real = [CANNON] if CANNON.exists() and not a.procedural_only else []
            n_real = a.stacks // 2 if real else 0
            synthesise(
                real,
                root / name,
                stacks_per_map=max(n_real, 1) if real else 1,
                procedural=a.stacks - n_real,
                cfg=cfg,
                seed=a.seed + i,
            )
        print(
            f"\n{a.stacks} stacks per set "
            f"({'half Cannon.exr, half procedural' if real else 'procedural only'}), "
            f"{width}x{height} mosaics"
        )
        registration, fusion = [], []
        print("\nregistration error, packed-plane pixels")
        print(f"{'set':<12}{'mode':<13}{'frames':>7}{'median':>9}{'max':>9}{'unaligned':>11}{'s/stack':>9}")
        for name, mode in (("shift", "translation"), ("shift+turn", "homography"), ("shift+turn", "translation")):
            errors, failed, seconds = [], 0, []
            for source in discover([root / name]):
                truth = json.loads((source.frames[0].path.parent / "synth.json").read_text())["motion"]["frames"]
                stack = load_stack(source)
                h, w = stack.frames.shape[-2:]
                t0 = time.perf_counter()
                _, motion = align.align_stack(stack.frames, stack.ratios, mode)
                seconds.append(time.perf_counter() - t0)
                for m, t in zip(motion[1:], truth[1:]):
                    if m.status == "unaligned":
                        failed += 1
                        continue
                    found = np.array(m.matrix).reshape(3, 3)
                    if mode == "translation" and name == "shift":
                        errors.append(math.hypot(m.dx - t["dx"], m.dy - t["dy"]))
                    else:
                        errors.append(grid_error(found, true_warp(t, h, w), h, w))
            print(
                f"{name:<12}{mode:<13}{len(errors) + failed:>7}{statistics.median(errors):>9.3f}"
                f"{max(errors):>9.3f}{failed:>11}{statistics.median(seconds):>9.3f}"
            )
            registration.append(
                {
                    "set": name,
                    "mode": mode,
                    "frames": len(errors) + failed,
                    "median_px": statistics.median(errors),
                    "max_px": max(errors),
                    "unaligned": failed,
                    "s_per_stack": statistics.median(seconds),
                }
            )
        print("(targets: translation median < 0.25 px, homography median < 0.5 px)")
        if not a.registration_only:
            fusion = fusion_table(root, model, loss, device)
    shift, turn = registration[0], registration[1]
    name = "align" + ("" if a.size == "1024x768" else f"_{a.size}") + ("_registration" if a.registration_only else "")
    common.record(
        name,
        {"stacks_per_set": a.stacks, "size": a.size, "registration": registration, "fusion": fusion},
        [
            common.headline(
                f"registration error on synthesised handheld stacks ({a.size} mosaics), translation",
                round(shift["median_px"], 3),
                "px median",
                target="< 0.25 px",
                met=shift["median_px"] < 0.25,
            ),
            common.headline(
                f"registration error on synthesised handheld stacks ({a.size} mosaics), homography on turned frames",
                round(turn["median_px"], 3),
                "px median",
                target="< 0.5 px",
                met=turn["median_px"] < 0.5,
            ),
        ],
    )


def fusion_table(root: Path, model, loss: LossConfig, device: torch.device) -> list[dict]:
    """Fusion by the bundled model of the turned and moving-object sets after each alignment -> rows."""
    table = []

    print("\nfusion with the bundled model, mean over stacks")
    print(f"{'set':<12}{'alignment':<30}{'l1':>9}{'PSNR':>8}{'SSIM':>8}{'object l1':>11}{'s/stack':>9}")
    methods = [
        ("none", lambda s: s),
        ("AlignMTB", lambda s: _with(s, align_mtb(s.frames, s.ratios))),
        ("align_image_stack", None),
        ("fusecli translation", lambda s: register(s, "translation", False)),
        ("fusecli homography", lambda s: register(s, "homography", False)),
        ("fusecli translation+deghost", lambda s: register(s, "translation", True)),
    ]
    hugin_missing = shutil.which("align_image_stack") is None
    for name in ("shift+turn", "object"):
        for label, fn in methods:
            if label == "align_image_stack":
                if hugin_missing:
                    continue
                fn = lambda s, _n=name: _with(s, align_hugin(s.frames, s.ratios, root / "hugin" / _n / s.name))  # noqa: E731
            rows, secs, obj = [], [], []
            for source in discover([root / name]):
                stack = load_stack(source)
                label_img = stack.read_label()
                t0 = time.perf_counter()
                stack = fn(stack)
                secs.append(time.perf_counter() - t0)
                fused, weights = fuse_stack(model, stack, device)
                rows.append(score(Prediction(fused, weights), Case(source, stack, label_img), loss))
                meta = json.loads((source.frames[0].path.parent / "synth.json").read_text())["motion"].get("object")
                if meta:
                    obj.append(
                        float(np.abs(fused - label_img).mean(axis=0)[object_mask(meta, *fused.shape[-2:])].mean())
                    )
            mean = lambda k, rows=rows: statistics.fmean(r[k] for r in rows)  # noqa: E731
            o = f"{statistics.fmean(obj):>11.4f}" if obj else f"{'-':>11}"
            print(
                f"{name:<12}{label:<30}{mean('l1'):>9.4f}{mean('psnr'):>8.2f}{mean('ssim'):>8.4f}{o}{statistics.median(secs):>9.3f}"
            )
            table.append(
                {
                    "set": name,
                    "alignment": label,
                    "l1": mean("l1"),
                    "psnr": mean("psnr"),
                    "ssim": mean("ssim"),
                    "object_l1": statistics.fmean(obj) if obj else None,
                    "s_per_stack": statistics.median(secs),
                }
            )
    if hugin_missing:
        print("align_image_stack is not installed (Debian: apt-get install hugin-tools): skipped")
    return table


def _with(stack, frames):
    import dataclasses

    return dataclasses.replace(stack, frames=frames)


if __name__ == "__main__":
    main()
