"""Scoring fusions: the seed's loss terms, PSNR, SSIM and MEF-SSIM for the model, classical
baselines and other tools' outputs, per stack and aggregated. docs/evaluation.md says what is
scored and how, and why.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from fusecli.baselines import best_exposed, best_single, enfuse_display, mertens_display
from fusecli.develop import display
from fusecli.discover import StackSource
from fusecli.errors import FuseError, UsageError
from fusecli.fuse import fuse_stack
from fusecli.io import image as image_io
from fusecli.io import raw as raw_io
from fusecli.io.common import RAW_EXTENSIONS
from fusecli.losses import TERMS, FusionLoss, LossConfig
from fusecli.metrics import MefSsim, global_contrast, psnr, ssim
from fusecli.model import FuseNet
from fusecli.stack import Stack, StackOptions, open_stack, prefetch

METRICS = (
    "total",
    *(t for t in TERMS if t != "mef"),
    "psnr",
    "ssim",
    "display_psnr",
    "display_ssim",
    "mef_ssim",
    "global_contrast",
)
#: (global_contrast: fusion's usual defect is too little of it, a flat "HDR look")
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "display_psnr", "display_ssim", "mef_ssim", "global_contrast"})
BUILTIN_METHODS = ("model", "mertens", "enfuse", "single", "uniform")
#: MEF-SSIM is scored on display-referred grey images downscaled (area) to this longest side.
MEF_SIDE = 1024
PRED_EXTENSIONS = (".dng", ".tif", ".tiff", ".png", ".exr", ".hdr", ".jpg", ".jpeg")


@dataclass(frozen=True)
class EvalOptions:
    """What to score: built-in methods, folders of other tools' outputs (each a method named after
    its folder), how stacks are opened (every method sees the same aligned frames), and the
    model's memory budget (GiB, as ``fuse --max-memory``)."""

    methods: tuple[str, ...] = ("model",)
    preds: tuple[Path, ...] = ()
    stack: StackOptions = StackOptions()
    max_memory: float = 0.25


@dataclass
class Prediction:
    """One method's output for one stack: fused (C, H, W) float32 [0, 1] in the stack's domain (None
    for tools that only give a developed picture), weights (K, 1|C, H, W) or None, and display
    (H, W, 3|1) display-referred [0, 1] (made from ``fused`` when not given)."""

    fused: np.ndarray | None
    weights: np.ndarray | None = None
    display: np.ndarray | None = None


@dataclass
class Case:
    """A decoded stack with everything it is scored against (read once, in the prefetch thread)."""

    source: StackSource
    stack: Stack | None = None
    label: np.ndarray | None = None
    label_error: str | None = None
    preds: dict[str, Prediction | str] = field(default_factory=dict)  # method -> prediction or why not
    error: str | None = None
    frames_display: np.ndarray | None = None  # (K, H, W, 3|1) display-referred
    label_display: np.ndarray | None = None
    mef: MefSsim | None = None  # the stack's part of MEF-SSIM, shared by every method


def pred_method(folder: Path) -> str:
    """The method name of a --pred folder: its name (``enfuse``, ``hdrmerge``...)."""
    return Path(folder).resolve().name or str(folder)


def method_names(options: EvalOptions) -> list[str]:
    """The methods' names, built-in first, then one per --pred folder (checked to be folders)."""
    if not options.methods and not options.preds:
        raise FuseError(f"--method: give at least one of {', '.join(BUILTIN_METHODS)} (or --pred)")
    for folder in options.preds:
        if not Path(folder).is_dir():
            raise FuseError(f"--pred {folder}: not a folder")
    names = list(options.methods) + [pred_method(p) for p in options.preds]
    if len(set(names)) != len(names):
        raise FuseError(f"methods {', '.join(names)}: each must appear once (rename a --pred folder that clashes)")
    return names


def find_prediction(folder: Path, stack_name: str) -> Path:
    """The file in ``folder`` that holds a prediction for stack ``stack_name``: ``NAME.ext`` or
    ``NAME_fused.ext`` (what ``fusecli fuse`` writes), ext one of :data:`PRED_EXTENSIONS`, in that
    order of preference."""
    for stem in (stack_name, f"{stack_name}_fused"):
        for ext in PRED_EXTENSIONS:
            for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    raise FuseError(
        f"{folder}: no prediction for stack {stack_name} (looked for {stack_name}.* and {stack_name}_fused.*)"
    )


def read_prediction(path: Path, stack: Stack, transfer: str = "auto") -> np.ndarray:
    """A prediction file -> (C, H, W) float32 [0, 1] in the stack's domain: packed planes for RAW
    stacks (a DNG or other RAW is decoded like a frame; a TIFF must hold the 4 planes, as labels do),
    linear RGB/mono otherwise, decoded with the stack's transfer (a tool's result for JPEG frames is
    sRGB-encoded, 16-bit TIFF included). An alpha channel (enfuse writes one) is dropped. Values are
    taken as they are (no exposure matching)."""
    if stack.kind == "raw" and path.suffix.lower() in RAW_EXTENSIONS:
        planes = raw_io.read_raw(path)[0]
    else:
        shown = stack.transfer if stack.kind != "raw" else transfer
        planes = image_io.read_label(path, transfer=shown, what="prediction")  # type: ignore[arg-type]
        if planes.shape[0] == stack.frames.shape[1] + 1 and stack.kind != "raw":
            planes = planes[:-1]
    if planes.shape != stack.frames.shape[1:]:
        raise FuseError(
            f"{path}: prediction of shape (C, H, W) = {planes.shape} does not match the stack's "
            f"{stack.frames.shape[1:]}"
        )
    return planes


def mef_size(height: int, width: int, side: int = MEF_SIDE) -> tuple[int, int]:
    """(width, height) an image is scored at for MEF-SSIM: its longest side at most ``side``."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _mef_input(image: np.ndarray, side: int = MEF_SIDE) -> torch.Tensor:
    """(H, W, C) display-referred -> (C, h, w) float32 tensor, area-downscaled to a longest side of ``side``."""
    size = mef_size(*image.shape[:2], side)
    small = (
        cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        if size != image.shape[1::-1]
        else image
    )
    small = small if small.ndim == 3 else small[..., None]
    return torch.from_numpy(np.moveaxis(np.ascontiguousarray(small, dtype=np.float32), -1, 0))


def mef_scorer(frames_display: np.ndarray, side: int = MEF_SIDE) -> MefSsim | None:
    """MEF-SSIM as photographers' tools report it (Ma, Zeng, Wang 2015, single scale, 11x11 Gaussian
    window sigma 1.5, C2 = 0.03^2) on Rec.601 luma of display-referred images downscaled (area) to
    a longest side of ``side`` (MEF_SIDE; a large side scores them as they are). frames_display
    (K, H, W, C) -> scorer, or None for images under 11 px."""
    stack = torch.stack([_mef_input(f, side) for f in frames_display])[None]
    if min(stack.shape[-2:]) < 11:
        return None
    return MefSsim(stack)


def mef_ssim_display(scorer: MefSsim, fused_display: np.ndarray, side: int = MEF_SIDE) -> float:
    """The score of one display-referred (H, W, C) image against a stack's :func:`mef_scorer` (made
    with the same ``side``)."""
    return scorer.score(_mef_input(fused_display, side)[None])


def contrast_display(image: np.ndarray) -> float:
    """:func:`fusecli.metrics.global_contrast` of one display-referred (H, W, C) image."""
    x = np.moveaxis(np.ascontiguousarray(image, dtype=np.float32), -1, 0)
    return float(global_contrast(torch.from_numpy(x)[None])[0])


def prepare_display(case: Case) -> None:
    """The display-referred frames and label of a case, and its MEF-SSIM scorer (once per stack)."""
    stack = case.stack
    assert stack is not None
    if case.frames_display is None:
        case.frames_display = np.stack([display(f, stack) for f in stack.frames])
        case.mef = mef_scorer(case.frames_display)
    if case.label is not None and case.label_display is None:
        case.label_display = display(case.label, stack)


@torch.inference_mode()
def score(
    pred: Prediction,
    case: Case,
    loss_config: LossConfig,
    device: torch.device | str = "cpu",
) -> dict[str, float | None]:
    """Every metric of one prediction against its case -> {metric: value or None where it does not
    apply} with the keys of :data:`METRICS`: the seed's terms, PSNR and SSIM in the stack's domain
    (predictions in that domain, with a label); PSNR and SSIM of the display-referred images (with a
    label); MEF-SSIM of the display-referred images (always)."""
    stack = case.stack
    assert stack is not None
    prepare_display(case)
    out: dict[str, float | None] = dict.fromkeys(METRICS)
    shown = pred.display if pred.display is not None else display(pred.fused, stack)
    if case.mef is not None:
        out["mef_ssim"] = mef_ssim_display(case.mef, shown)
    out["global_contrast"] = contrast_display(shown)
    if case.label_display is not None:
        y_d, l_d = (
            torch.from_numpy(np.moveaxis(np.ascontiguousarray(a, dtype=np.float32), -1, 0))[None]
            for a in (shown, case.label_display)
        )
        out["display_psnr"] = float(psnr(y_d, l_d))
        if min(y_d.shape[-2:]) >= 11:
            out["display_ssim"] = float(ssim(y_d, l_d))
    label = case.label
    if label is None or pred.fused is None:
        return out
    y = torch.from_numpy(np.ascontiguousarray(pred.fused, dtype=np.float32))[None].to(device)
    f = torch.from_numpy(np.ascontiguousarray(stack.frames, dtype=np.float32))[None].to(device)
    y_star = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None].to(device)
    k = f.shape[1]
    weights = (
        torch.from_numpy(pred.weights)[None].to(device)
        if pred.weights is not None
        else torch.full((1, k, 1, *y.shape[-2:]), 1.0 / k, device=device)
    )
    # the loss's MEF-SSIM term is a training term that eval does not report (mef_ssim, on the
    # display-referred images, is): not computed, as it would cost a large share of eval's time
    _, terms = FusionLoss(dataclasses.replace(loss_config, lambda_mef=0.0))(y, y_star, f, weights)
    for name, value in ((n, v) for n, v in terms.items() if n in METRICS):
        out[name] = float(value)
    if pred.weights is None:
        out["black_reg"] = None
    out["total"] = loss_config.total(out, with_black_reg=False)
    out["psnr"] = float(psnr(y, y_star))
    if min(y.shape[-2:]) >= 11:
        out["ssim"] = float(ssim(y, y_star))
    return out


def predict(method: str, case: Case, model: FuseNet | None, device: torch.device, options: EvalOptions) -> Prediction:
    """Run one method on a decoded stack."""
    stack = case.stack
    assert stack is not None
    if method in case.preds:
        pred = case.preds[method]
        if isinstance(pred, str):
            raise FuseError(pred)
        return pred
    if method == "model":
        if model is None:
            raise FuseError("no model loaded")
        try:
            fused, weights = fuse_stack(model, stack, device, options.max_memory, keep_weights=True)
        except (RuntimeError, ValueError) as e:
            raise FuseError(f"stack {stack.name}: the model cannot fuse it ({str(e).splitlines()[0]})") from None
        return Prediction(fused, weights)
    if method in ("mertens", "enfuse"):
        prepare_display(case)
        run = mertens_display if method == "mertens" else enfuse_display
        return Prediction(None, display=run(case.frames_display))
    if method == "single":
        k = best_single(stack.frames, case.label)[0] if case.label is not None else best_exposed(stack.frames)
        return Prediction(stack.frames[k])
    if method == "uniform":
        return Prediction(stack.frames.mean(axis=0))
    raise FuseError(f"unknown method {method!r} (choose from {', '.join(BUILTIN_METHODS)})")


def open_case(source: StackSource, options: EvalOptions) -> Case:
    """Open a stack, its label and the other tools' predictions for it; errors go into the case."""
    case = Case(source)
    try:
        case.stack = open_stack(source, options.stack)
    except FuseError as e:
        case.error = str(e)
        return case
    if source.label is not None:
        try:
            case.label = case.stack.read_label()
        except FuseError as e:
            case.label_error = str(e)
    for folder in options.preds:
        name = pred_method(folder)
        try:
            case.preds[name] = Prediction(
                read_prediction(find_prediction(Path(folder), source.name), case.stack, options.stack.transfer)
            )
        except FuseError as e:
            case.preds[name] = str(e)
    return case


def _row(
    stack: str,
    method: str,
    status: str,
    labelled: bool,
    reason: str | None = None,
    *,
    metrics: dict | None = None,
    seconds: float = 0.0,
) -> dict:
    row = {"stack": stack, "method": method, "status": status, "labelled": labelled, "reason": reason}
    row.update(metrics or dict.fromkeys(METRICS))
    row["seconds"] = round(seconds, 4)
    return row


def evaluate_sources(
    sources: Sequence[StackSource],
    model: FuseNet | None,
    device: torch.device,
    *,
    loss_config: LossConfig,
    options: EvalOptions,
    on_case: Callable[[Case, list[dict], list[tuple[str, Prediction]]], None] | None = None,
) -> list[dict]:
    """Score every method on every stack -> one row per (stack, method): stack, method, status ("ok"
    or "failed"), labelled, reason, the metrics of :data:`METRICS` (None where they do not apply)
    and seconds. The next stack is decoded while this one is scored. ``on_case(case, rows,
    predictions)`` sees each stack's results (the report and progress bar use it)."""
    methods = method_names(options)
    rows: list[dict] = []
    brackets = [s for s in sources if not s.single]  # a single shot has nothing to fuse
    for _, case, _ in prefetch(brackets, lambda source: open_case(source, options)):
        case_rows: list[dict] = []
        predictions: list[tuple[str, Prediction]] = []
        name = case.source.name
        if case.error is not None or case.stack is None:
            case_rows = [_row(name, m, "failed", case.source.label is not None, case.error) for m in methods]
        elif case.label_error is not None:
            case_rows = [_row(name, m, "failed", True, case.label_error) for m in methods]
        else:
            for method in methods:
                t0 = time.perf_counter()
                try:
                    pred = predict(method, case, model, device, options)
                    metrics = score(pred, case, loss_config, device)
                except FuseError as e:
                    case_rows.append(_row(name, method, "failed", case.label is not None, str(e)))
                    continue
                predictions.append((method, pred))
                case_rows.append(
                    _row(name, method, "ok", case.label is not None, metrics=metrics, seconds=time.perf_counter() - t0)
                )
        rows += case_rows
        if on_case:
            on_case(case, case_rows, predictions)
    return rows


@dataclass(frozen=True)
class Evaluation:
    """What ``eval`` reports: a row per (stack, method), the mean and median of each method, the
    thresholds checked against the first method, and the loss weights that scored them."""

    methods: tuple[str, ...]
    rows: list[dict]
    aggregates: list[dict]
    checks: list[dict]
    loss: LossConfig
    metrics: tuple[str, ...] = METRICS
    higher_is_better: frozenset = HIGHER_IS_BETTER

    @property
    def failed(self) -> int:
        """Rows (stack and method) that could not be scored."""
        return sum(r["status"] == "failed" for r in self.rows)

    @property
    def formula(self) -> str:
        return self.loss.formula()


def summarise(
    rows: list[dict], methods: Sequence[str], thresholds: Sequence[Threshold], loss_config: LossConfig
) -> Evaluation:
    """Rows of :func:`evaluate_sources` -> their :class:`Evaluation` (aggregates, thresholds checked)."""
    aggregates = aggregate(rows, methods)
    checks = check_thresholds(aggregates, methods[0], thresholds)
    return Evaluation(tuple(methods), rows, aggregates, checks, loss_config)


def aggregate(rows: Sequence[dict], methods: Sequence[str]) -> list[dict]:
    """Mean and median of every metric over the stacks each method scored -> rows with method, stat
    ("mean" or "median"), stacks (scored), labelled (of those, with a label) and the metrics."""
    out = []
    for method in methods:
        ok = [r for r in rows if r["method"] == method and r["status"] == "ok"]
        for stat, fn in (("mean", statistics.fmean), ("median", statistics.median)):
            agg = {"method": method, "stat": stat, "stacks": len(ok), "labelled": sum(r["labelled"] for r in ok)}
            for m in METRICS:
                values = [r[m] for r in ok if r[m] is not None]
                agg[m] = float(fn(values)) if values else None
            out.append(agg)
    return out


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # "under": fail if value < limit; "over": fail if value > limit
    limit: float


def parse_thresholds(text: str | None, op: str) -> list[Threshold]:
    """``psnr=30,ssim=0.9`` -> thresholds; unknown metrics and non-numbers are user errors."""
    if not text:
        return []
    out = []
    for item in text.split(","):
        metric, sep, value = item.strip().partition("=")
        metric = metric.strip()
        if not sep or metric not in METRICS:
            raise UsageError(
                f"--fail-{op} {text!r}: expected METRIC=VALUE[,...] with METRIC one of {', '.join(METRICS)}"
            )
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit):
            raise UsageError(f"--fail-{op} {text!r}: {value.strip()!r} is not a finite number")
        out.append(Threshold(metric, op, limit))
    return out


def check_thresholds(aggregates: Sequence[dict], method: str, thresholds: Sequence[Threshold]) -> list[dict]:
    """Each threshold against ``method``'s mean -> [{metric, op, limit, value, passed}]. A metric the
    method has no value for fails (a gate must not pass on missing data)."""
    mean = next((a for a in aggregates if a["method"] == method and a["stat"] == "mean"), None)
    out = []
    for t in thresholds:
        value = mean.get(t.metric) if mean else None
        passed = (
            value is not None and not math.isnan(value) and (value >= t.limit if t.op == "under" else value <= t.limit)
        )
        out.append(
            {"method": method, "metric": t.metric, "op": t.op, "limit": t.limit, "value": value, "passed": passed}
        )
    return out
