"""What ``fusecli eval --report DIR`` draws: a contact sheet per stack and one summary plot.

Contact sheet (``DIR/<stack>.png``), a grid of tiles each ``TILE`` pixels wide with a caption strip
above it (:func:`sheet_size` gives its size):

- row 1: the frames, brightest first, then the label (when there is one);
- one row per method that produced an image: the fused result, its absolute error to the label
  (mean over channels, ``ERROR_SCALE`` x magnified, inferno colour map; absent without a label) and
  the weight map (the colours of ``fuse --save-weights``; absent for methods without weights).

Images are shown as a viewer would: packed RAW planes at half resolution (R, mean of the greens, B),
developed as ``fuse`` develops TIFFs (:func:`fusecli.develop.develop`), sRGB curve, upright; RGB
and mono frames with the sRGB curve.

Summary plot (``DIR/summary.png``): per metric, the per-stack values of each method as points with
the median marked, so outliers are seen at once (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fusecli.develop import display_rgb, orient, weight_map
from fusecli.evaluate import HIGHER_IS_BETTER, Case, Prediction
from fusecli.outputs import write_picture
from fusecli.stack import Stack

TILE = 256  # tile width in pixels
CAPTION = 20  # caption strip height
GAP = 4
ERROR_SCALE = 4.0
SUMMARY_METRICS = ("psnr", "ssim", "mef_ssim", "l1", "total")


def tile_height(stack: Stack) -> int:
    """Height of a tile for this stack's (upright, displayed) aspect ratio."""
    h, w = stack.frames.shape[-2:]
    if stack.camera is not None and stack.camera.orientation in (5, 6, 7, 8):
        h, w = w, h
    return max(1, round(TILE * h / w))


def sheet_size(k: int, labelled: bool, methods: int, th: int) -> tuple[int, int]:
    """(width, height) of a contact sheet: columns = max(K + label, 3), rows = 1 + methods."""
    cols = max(k + int(labelled), 3)
    rows = 1 + methods
    return cols * TILE + (cols + 1) * GAP, rows * (th + CAPTION) + (rows + 1) * GAP


def _tile(image: np.ndarray, th: int, caption: str) -> np.ndarray:
    """(H, W, 3) float [0, 1] -> (CAPTION + th, TILE, 3) uint8 with the caption drawn above."""
    out = np.zeros((CAPTION + th, TILE, 3), np.uint8)
    small = cv2.resize(image.astype(np.float32), (TILE, th), interpolation=cv2.INTER_AREA)
    out[CAPTION:] = np.round(np.clip(small, 0, 1) * 255).astype(np.uint8)
    cv2.putText(out, caption[:40], (3, CAPTION - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(case: Case, predictions: Sequence[tuple[str, Prediction]], rows: Sequence[dict]) -> np.ndarray:
    """The contact sheet of one scored stack -> (H, W, 3) uint8 sRGB (layout: module doc)."""
    stack = case.stack
    assert stack is not None
    th = tile_height(stack)
    width, height = sheet_size(stack.frames.shape[0], case.label is not None, len(predictions), th)
    sheet = np.full((height, width, 3), 30, np.uint8)
    grid: list[list[tuple[np.ndarray, str]]] = [
        [
            (display_rgb(f, stack), f"frame {k + 1}  x{r:.3g}")
            for k, (f, r) in enumerate(zip(stack.frames, stack.ratios))
        ]
    ]
    if case.label is not None:
        grid[0].append((display_rgb(case.label, stack), "label"))
    by_method = {r["method"]: r for r in rows}
    for method, pred in predictions:
        metrics = by_method.get(method, {})
        caption = (
            f"{method}"
            + (f"  {metrics['psnr']:.2f} dB" if metrics.get("psnr") is not None else "")
            + (f"  mef {metrics['mef_ssim']:.3f}" if metrics.get("mef_ssim") is not None else "")
            + (f"  {metrics['display_psnr']:.1f} dB disp" if metrics.get("display_psnr") is not None else "")
        )
        shown = pred.display if pred.display is not None else display_rgb(pred.fused, stack)
        if shown.shape[-1] == 1:
            shown = np.repeat(shown, 3, axis=-1)
        row = [(shown, caption)]
        if case.label is not None and pred.fused is not None:
            err = np.abs(pred.fused - case.label).mean(axis=0)
            err8 = np.round(np.clip(err * ERROR_SCALE, 0, 1) * 255).astype(np.uint8)
            coloured = cv2.applyColorMap(err8, cv2.COLORMAP_INFERNO)[..., ::-1].astype(np.float32) / 255
            row.append(
                (orient(coloured, stack.camera.orientation) if stack.camera else coloured, f"|error| x{ERROR_SCALE:g}")
            )
        if pred.weights is not None:
            wm = weight_map(pred.weights).astype(np.float32) / 255
            row.append((orient(wm, stack.camera.orientation) if stack.camera else wm, "weights"))
        grid.append(row)
    for i, row in enumerate(grid):
        y = GAP + i * (th + CAPTION + GAP)
        for j, (image, caption) in enumerate(row):
            x = GAP + j * (TILE + GAP)
            sheet[y : y + CAPTION + th, x : x + TILE] = _tile(image, th, caption)
    return sheet


def write_contact_sheet(
    folder: Path, case: Case, predictions: Sequence[tuple[str, Prediction]], rows: Sequence[dict]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.source.name}.png"
    write_picture(path, contact_sheet(case, predictions, rows).astype(np.float32) / 255, ".png")
    return path


def write_summary_plot(folder: Path, rows: Sequence[dict], methods: Sequence[str]) -> Path:
    """Per metric, each method's per-stack values (points) and median (bar) -> DIR/summary.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusecli.io.common import atomic_path

    metrics = [m for m in SUMMARY_METRICS if any(r.get(m) is not None for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes[0], metrics):
        for i, method in enumerate(methods):
            values = [
                r[metric] for r in rows if r["method"] == method and r["status"] == "ok" and r[metric] is not None
            ]
            if not values:
                continue
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=12, alpha=0.7)
            ax.hlines(float(np.median(values)), i - 0.3, i + 0.3, colors="black")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_title(f"{metric} ({'higher' if metric in HIGHER_IS_BETTER else 'lower'} is better)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("per-stack values; bar = median", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
