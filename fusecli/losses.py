"""The training objective of ``../shared/seed/loss-design.md``, as plain PyTorch functions.

Shapes used throughout:

- ``y`` (fused image) and ``y_star`` (label): ``(B, C, H, W)``, values in [0, 1].
- ``frames``: ``(B, K, C, H, W)`` in [0, 1], brightest (the 1/1 reference) first.
- ``weights``: ``(B, K, 1, H, W)`` (per frame) or ``(B, K, C, H, W)`` (per frame and channel).

Gradients are forward differences, ``dx a = a[..., :, 1:] - a[..., :, :-1]`` and
``dy a = a[..., 1:, :] - a[..., :-1, :]``; "mean" is over every element of the tensor it is applied
to. Every function returns a 0-dim tensor on the inputs' device and in their dtype, differentiable in
``y`` and ``weights``. Nothing here names a device: all tensors are created from the inputs.

Where the seed's code is broken or silent, the choices are (docs/model.md, "The loss"):

- ``.cuda()`` is gone: masks are built with ``torch.where`` on the input's device.
- ``raise 'string'`` is replaced by a ``ValueError`` that names the expected shapes, and
  BlackRegLoss works for any K >= 2 (the frames after the 1/1 reference are penalised).
- The undefined ``tf_high_light_dilate_blur(mask, 5)`` is a 5x5 max filter (dilation) followed by a
  5x5 box mean that averages only in-image pixels.
- ``sum(low_mask) == 0`` (no dark flat pixel) gives a loss of exactly 0 instead of NaN.
- Masks (highlight indicator, dark-flat mask) are constants of the data: they carry no gradient.
- Reductions that can overflow half precision (sums over a whole batch) run in float32 and the
  result is cast back to the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from fusecli import config
from fusecli.blend import srgb_encode
from fusecli.errors import FuseError
from fusecli.metrics import mef_ssim

__all__ = [
    "l1",
    "gradient_l1",
    "grad_sign",
    "high_smooth",
    "luma_grad",
    "black_reg",
    "dilate_blur",
    "LossConfig",
    "FusionLoss",
    "TERMS",
]


def _check_pair(y: torch.Tensor, y_star: torch.Tensor) -> None:
    if y.ndim != 4 or y_star.ndim != 4:
        raise ValueError(f"expected y and y_star of shape (B, C, H, W), got {tuple(y.shape)} and {tuple(y_star.shape)}")
    if y.shape != y_star.shape:
        raise ValueError(f"y {tuple(y.shape)} and y_star {tuple(y_star.shape)} must have the same shape (B, C, H, W)")


def _dx(a: torch.Tensor) -> torch.Tensor:
    return a[..., :, 1:] - a[..., :, :-1]


def _dy(a: torch.Tensor) -> torch.Tensor:
    return a[..., 1:, :] - a[..., :-1, :]


def l1(y: torch.Tensor, y_star: torch.Tensor) -> torch.Tensor:
    """Mean absolute error. y, y_star: (B, C, H, W) in [0, 1] -> 0-dim tensor >= 0."""
    _check_pair(y, y_star)
    return (y - y_star).abs().mean()


def _diff_pairs(y: torch.Tensor, y_star: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(dx y, dx y*), (dy y, dy y*)]: computed once and shared by the gradient terms."""
    return [(_dx(y), _dx(y_star)), (_dy(y), _dy(y_star))]


def _highlight_masks(y_star: torch.Tensor, h_th: float, dtype: torch.dtype) -> list[torch.Tensor]:
    """1 where the larger label pixel of a difference pair is >= h_th (x pairs, then y pairs)."""
    with torch.no_grad():
        ix = torch.maximum(y_star[..., :, 1:], y_star[..., :, :-1]) >= h_th
        iy = torch.maximum(y_star[..., 1:, :], y_star[..., :-1, :]) >= h_th
    return [ix.to(dtype), iy.to(dtype)]


def _gradient_l1(pairs) -> torch.Tensor:
    return sum((a - b).abs().mean() for a, b in pairs)


def _grad_sign(pairs) -> torch.Tensor:
    return sum(F.relu(-a * b).mean() for a, b in pairs)


def _high_smooth(pairs, masks) -> torch.Tensor:
    return sum(((a - b).abs() * m).mean() for (a, b), m in zip(pairs, masks))


def gradient_l1(y: torch.Tensor, y_star: torch.Tensor) -> torch.Tensor:
    """mean|dx y - dx y*| + mean|dy y - dy y*|. y, y_star: (B, C, H, W) in [0, 1] -> 0-dim >= 0."""
    _check_pair(y, y_star)
    return _gradient_l1(_diff_pairs(y, y_star))


def grad_sign(y: torch.Tensor, y_star: torch.Tensor) -> torch.Tensor:
    """mean ReLU(-dx y * dx y*) + mean ReLU(-dy y * dy y*): penalises edges whose sign flips.

    y, y_star: (B, C, H, W) in [0, 1] -> 0-dim tensor in [0, 2].
    """
    _check_pair(y, y_star)
    return _grad_sign(_diff_pairs(y, y_star))


def high_smooth(y: torch.Tensor, y_star: torch.Tensor, h_th: float = 0.8) -> torch.Tensor:
    """Gradient L1 restricted to the label's highlights (mean over all positions, masked included).

    A difference position counts where the larger of its two label pixels is >= ``h_th``.
    y, y_star: (B, C, H, W) in [0, 1] -> 0-dim tensor >= 0.
    """
    _check_pair(y, y_star)
    return _high_smooth(_diff_pairs(y, y_star), _highlight_masks(y_star, h_th, y.dtype))


def luma_grad(y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The seed's LumaGradLoss: squared error of 8x8-pooled brightness differences.

    Both images are adaptive-average-pooled to 8x8 and clamped to [0, 1]; x and y differences are
    taken on the ``[:-1, :-1]`` window exactly as the seed's code does (so 7x7 positions each).
    ``reference`` is the 1/1 frame ``frames[:, 0]`` (the seed's code) or the label (its text).
    y, reference: (B, C, H, W) in [0, 1] -> 0-dim tensor >= 0.
    """
    _check_pair(y, reference)
    p = F.adaptive_avg_pool2d(y, (8, 8)).clamp(0.0, 1.0)
    t = F.adaptive_avg_pool2d(reference, (8, 8)).clamp(0.0, 1.0)
    p_x = p[:, :, :-1, :-1] - p[:, :, :-1, 1:]
    p_y = p[:, :, :-1, :-1] - p[:, :, 1:, :-1]
    t_x = t[:, :, :-1, :-1] - t[:, :, :-1, 1:]
    t_y = t[:, :, :-1, :-1] - t[:, :, 1:, :-1]
    return ((t_x - p_x) ** 2 + (t_y - p_y) ** 2).mean()


def dilate_blur(mask: torch.Tensor, kernel: int = 5) -> torch.Tensor:
    """kernel x kernel max filter, then kernel x kernel box mean over in-image pixels (same size).

    mask: (B, 1, H, W) in [0, 1]; kernel odd >= 1 -> (B, 1, H, W) in [0, 1].
    """
    if mask.ndim != 4:
        raise ValueError(f"expected mask of shape (B, 1, H, W), got {tuple(mask.shape)}")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd size >= 1, got {kernel}")
    pad = kernel // 2
    dilated = F.max_pool2d(mask, kernel, stride=1, padding=pad)
    return F.avg_pool2d(dilated, kernel, stride=1, padding=pad, count_include_pad=False)


def black_reg(
    weights: torch.Tensor,
    frames: torch.Tensor,
    y_star: torch.Tensor,
    *,
    threshold: float = 0.4,
    kernel: int = 5,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The seed's BlackRegLoss for any K >= 2: the mean weight of the frames darker than the
    reference in the reference's dark flat regions (the seed's reference is the 1/1 frame, index 0).

    dark = max over channels of the reference frame <= threshold; flat = 1 - max over channels of
    max(|h-diff|, |w-diff|) of the label (reflection padding: one row on top, one column on the
    left); low = dilate_blur(dark * flat); loss = sum over the frames after the reference of
    weights * low / (sum(low) x their count x Cw), and 0 when that is 0 (no dark flat pixel, or the
    reference is the darkest frame).
    weights: (B, K, 1|C, H, W) >= 0; frames: (B, K, C, H, W) in [0, 1]; y_star: (B, C, H, W) in
    [0, 1]; reference: (B,) frame indices (default: 0) -> 0-dim tensor in [0, 1] for weights in [0, 1].
    """
    if frames.ndim != 5 or weights.ndim != 5 or y_star.ndim != 4:
        raise ValueError(
            "expected weights (B, K, 1|C, H, W), frames (B, K, C, H, W), y_star (B, C, H, W); got "
            f"{tuple(weights.shape)}, {tuple(frames.shape)}, {tuple(y_star.shape)}"
        )
    b, k, c, h, w = frames.shape
    cw = weights.shape[2]
    if k < 2 or weights.shape[:2] != (b, k) or weights.shape[3:] != (h, w) or cw not in (1, c):
        raise ValueError(
            f"weights {tuple(weights.shape)} must be (B, K, 1, H, W) or (B, K, C, H, W) with K >= 2 "
            f"for frames {tuple(frames.shape)}"
        )
    if y_star.shape != (b, c, h, w):
        raise ValueError(f"y_star {tuple(y_star.shape)} must be (B, C, H, W) = {(b, c, h, w)}")
    # Accumulate in at least float32 (a batch sum overflows float16); float64 stays float64.
    acc = torch.promote_types(weights.dtype, torch.float32)
    with torch.no_grad():
        # The mask is a constant of the data, built in the accumulation dtype.
        ref = torch.zeros(b, dtype=torch.long, device=frames.device) if reference is None else reference
        ref_frames = frames[torch.arange(b, device=frames.device), ref]  # (B, C, H, W)
        grey = ref_frames.to(acc).amax(dim=1, keepdim=True)
        dark = (grey <= threshold).to(acc)
        darker = (torch.arange(k, device=frames.device)[None] > ref[:, None]).to(acc)  # (B, K)
        label = y_star.detach().to(acc)
        padded_h = F.pad(label, (0, 0, 1, 0), mode="reflect")
        padded_w = F.pad(label, (1, 0, 0, 0), mode="reflect")
        tv = torch.maximum(_dy(padded_h).abs(), _dx(padded_w).abs()).amax(dim=1, keepdim=True)
        low = dilate_blur(dark * (1.0 - tv), kernel)  # (B, 1, H, W)
        denominator = (low.flatten(1).sum(dim=1) * darker.sum(dim=1)).sum() * cw
        mask = low.unsqueeze(1) * darker[:, :, None, None, None]  # (B, K, 1, H, W)
    numerator = (weights.to(acc) * mask).sum()
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    loss = torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))
    return loss.to(weights.dtype)


#: The loss terms, in the order they are summed, and the LossConfig field that weighs each (None: 1).
TERM_WEIGHTS = {
    "l1": None,
    "gradient_l1": None,
    "grad_sign": "gamma",
    "high_smooth": "eta",
    "luma_grad": "lambda_luma",
    "black_reg": "lambda_black",
    "mef": "lambda_mef",
}
TERMS = tuple(TERM_WEIGHTS)
#: Terms that regularise training, not the image against its label: ``eval``'s total leaves them out.
TRAINING_TERMS = ("black_reg", "mef")


@dataclass
class LossConfig:
    """Weights and parameters of the combined loss (docs/model.md, "The loss", says why these defaults);
    :meth:`formula` writes the total out."""

    gamma: float = 40.0
    eta: float = 4.0
    h_th: float = 0.8
    lambda_luma: float = 1.0
    lambda_black: float = 0.1
    lambda_mef: float = 0.0  # weight of 1 - MEF-SSIM of the result, for display-referred stacks (no label needed)
    black_threshold: float = 0.4
    black_kernel: int = 5
    luma_reference: Literal["frame", "label"] = "frame"

    def __post_init__(self) -> None:
        for f in ("gamma", "eta", "lambda_luma", "lambda_black", "lambda_mef"):
            value = getattr(self, f)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise FuseError(f"loss configuration: {f} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.h_th <= 1.0:
            raise FuseError(f"loss configuration: h_th must be in (0, 1], got {self.h_th!r}")
        if not 0.0 < self.black_threshold <= 1.0:
            raise FuseError(f"loss configuration: black_threshold must be in (0, 1], got {self.black_threshold!r}")
        if not (isinstance(self.black_kernel, int) and self.black_kernel >= 1 and self.black_kernel % 2 == 1):
            raise FuseError(f"loss configuration: black_kernel must be an odd integer >= 1, got {self.black_kernel!r}")
        if self.luma_reference not in ("frame", "label"):
            raise FuseError(
                f"loss configuration: luma_reference must be 'frame' or 'label', got {self.luma_reference!r}"
            )

    @classmethod
    def from_dict(cls, data: dict, source: str = "loss configuration") -> "LossConfig":
        return config.from_dict(cls, data, source, "loss")

    @classmethod
    def from_toml(cls, path: Path) -> "LossConfig":
        """Read the ``[loss]`` table of a TOML file (or the whole file when it has no such table)."""
        data = config.read_toml(path)
        return cls.from_dict(data.get("loss", data), source=str(path))

    def weights(self) -> dict[str, float]:
        """Each term of :data:`TERMS` and its weight in the total: the one table that
        :meth:`total` and :meth:`formula` are both made from."""
        return {term: 1.0 if attr is None else float(getattr(self, attr)) for term, attr in TERM_WEIGHTS.items()}

    def total(self, terms: dict, with_black_reg: bool = True):
        """The weighted sum of the terms (tensors or floats); ``with_black_reg=False`` leaves out
        the training regularisers (:data:`TRAINING_TERMS`: what ``eval`` compares across methods)."""
        weights = self.weights()
        total = None
        for term in TERMS:
            if term in TRAINING_TERMS and (not with_black_reg or term not in terms):
                continue
            part = terms[term] if TERM_WEIGHTS[term] is None else weights[term] * terms[term]
            total = part if total is None else total + part
        return total

    def formula(self) -> str:
        """The total as text, with this configuration's weights (``eval`` prints it)."""
        weights = self.weights()
        image = [t if TERM_WEIGHTS[t] is None else f"{weights[t]:g}*{t}" for t in TERMS if t not in TRAINING_TERMS]
        extra = " + ".join(f"{weights[t]:g}*{t}" for t in TRAINING_TERMS if weights[t] > 0)
        return f"total = {' + '.join(image)} (black_reg apart; training adds {extra})"

    def to_dict(self) -> dict:
        return asdict(self)


def mef_loss(frames: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - MEF-SSIM (single scale) of the sRGB-encoded result against the sRGB-encoded frames: what
    a viewer sees of the structure each exposure holds, with no label (Ma et al. 2019 train MEF-Net
    on it). frames (B, K, C, H, W), y (B, C, H, W), linear [0, 1], H, W >= 11 -> 0-dim tensor."""
    return 1.0 - mef_ssim(srgb_encode(frames), srgb_encode(y), levels=1)


class FusionLoss(torch.nn.Module):
    """The combined training loss; returns the total and every term (0-dim tensors).

    forward(y, y_star, frames, weights): y, y_star (B, C, H, W) in [0, 1]; frames (B, K, C, H, W)
    in [0, 1]; weights (B, K, 1|C, H, W) softmax-normalised over K -> (total, {term: value}).
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()

    def forward(
        self,
        y: torch.Tensor,
        y_star: torch.Tensor,
        frames: torch.Tensor,
        weights: torch.Tensor,
        *,
        reference: torch.Tensor | None = None,
        display: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``reference`` (B,): each stack's reference frame, its normal exposure (default 0: the
        seed's 1/1 frame); LumaGrad and BlackReg are taken against it. ``display`` (B,): 1 for
        display-referred stacks (camera JPEG/PNG), which alone get the MEF-SSIM term: what a viewer
        sees of them is the fusion itself, while a scene-referred (RAW) result follows its label."""
        cfg = self.config
        if frames.ndim != 5 or frames.shape[0] != y.shape[0] or frames.shape[2:] != y.shape[1:]:
            raise ValueError(f"frames {tuple(frames.shape)} must be (B, K, C, H, W) for y {tuple(y.shape)}")
        _check_pair(y, y_star)
        ref = torch.zeros(y.shape[0], dtype=torch.long, device=y.device) if reference is None else reference
        ref_frame = frames[torch.arange(y.shape[0], device=y.device), ref]
        reference_image = ref_frame if cfg.luma_reference == "frame" else y_star
        pairs = _diff_pairs(y, y_star)  # shared by the three gradient terms
        terms = {
            "l1": l1(y, y_star),
            "gradient_l1": _gradient_l1(pairs),
            "grad_sign": _grad_sign(pairs),
            "high_smooth": _high_smooth(pairs, _highlight_masks(y_star, cfg.h_th, y.dtype)),
            "luma_grad": luma_grad(y, reference_image),
            "black_reg": black_reg(
                weights, frames, y_star, threshold=cfg.black_threshold, kernel=cfg.black_kernel, reference=ref
            ),
        }
        if cfg.lambda_mef > 0:
            shown = torch.ones(y.shape[0], dtype=torch.bool, device=y.device) if display is None else display > 0.5
            terms["mef"] = mef_loss(frames[shown], y[shown]) * shown.float().mean() if shown.any() else y.sum() * 0
        return cfg.total(terms), terms
