"""Image-quality metrics that ``fusecli eval`` reports: PSNR, SSIM and MEF-SSIM.

- :func:`psnr` and :func:`ssim` compare a fused image with its label (full reference). SSIM is
  pytorch-msssim's (Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03), not a copy of our own.
- :func:`mef_ssim` scores a fused image against its input stack, with no label: the multi-exposure
  fusion quality index of K. Ma, K. Zeng and Z. Wang, "Perceptual Quality Assessment for
  Multi-Exposure Image Fusion", IEEE TIP 24(11), 2015, with the constants of the authors' release.

All functions take tensors in [0, 1] on any device and return a 0-dim tensor (the mean over the
batch) in the input's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _msssim_ssim

from fusecli.blend import separable_filter

__all__ = ["psnr", "ssim", "mef_ssim", "PSNR_CAP_DB"]

#: PSNR of a perfect prediction. Infinity is not valid JSON, so PSNR is capped here (documented).
PSNR_CAP_DB = 100.0


def _check_pair(y: torch.Tensor, y_star: torch.Tensor) -> None:
    if y.ndim != 4 or y.shape != y_star.shape:
        raise ValueError(
            f"expected y and y_star of the same shape (B, C, H, W), got {tuple(y.shape)} and {tuple(y_star.shape)}"
        )


def psnr(y: torch.Tensor, y_star: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image then averaged, capped at ``PSNR_CAP_DB``.

    y, y_star: (B, C, H, W) in [0, data_range] -> 0-dim tensor in [-inf, 100].
    """
    _check_pair(y, y_star)
    acc = torch.promote_types(y.dtype, torch.float32)
    mse = ((y.to(acc) - y_star.to(acc)) ** 2).flatten(1).mean(dim=1)
    floor = data_range**2 * 10.0 ** (-PSNR_CAP_DB / 10.0)
    value = 10.0 * torch.log10(data_range**2 / mse.clamp_min(floor))
    return value.mean().to(y.dtype)


def ssim(y: torch.Tensor, y_star: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (pytorch-msssim, Gaussian window 11 / sigma 1.5), averaged over channels
    and batch. y, y_star: (B, C, H, W) in [0, data_range], H, W >= 11 -> 0-dim tensor in [-1, 1].
    """
    _check_pair(y, y_star)
    if min(y.shape[-2:]) < 11:
        raise ValueError(f"ssim needs images of at least 11x11 pixels, got {tuple(y.shape[-2:])}")
    acc = torch.promote_types(y.dtype, torch.float32)
    value = _msssim_ssim(y.to(acc), y_star.to(acc), data_range=data_range, size_average=True)
    return value.to(y.dtype)


# --- MEF-SSIM -------------------------------------------------------------------------------------
# Constants of the authors' release (MEF quality model v1.0, 2015), on the [0, 255] scale that it
# works in: K = 0.03 (C = (K * 255)^2), 11x11 Gaussian window with sigma 1.5 for the SSIM statistics,
# an 11x11 box window for each patch's mean and signal strength, 0.001 added to the signal strength,
# 3 scales weighted (0.0448, 0.2856, 0.3001) / their sum, 2x2 mean downsampling between scales.
_MEF_K = 0.03
_MEF_WINDOW = 11
_MEF_SIGMA = 1.5
_MEF_SCALE_WEIGHTS = (0.0448, 0.2856, 0.3001)
_MATLAB_EPS = 2.220446049250313e-16


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (..., H, W): Rec.601 luma for C = 3 (as MATLAB's rgb2gray), else the channel mean."""
    if x.shape[-3] == 3:
        w = torch.tensor([0.2989, 0.5870, 0.1140], dtype=x.dtype, device=x.device)
        return (x * w[:, None, None]).sum(dim=-3)
    return x.mean(dim=-3)


def _windows(device, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1-D box and Gaussian windows (11,) of MEF-SSIM, each summing to 1."""
    box = torch.full((_MEF_WINDOW,), 1.0 / _MEF_WINDOW, dtype=dtype, device=device)
    x = torch.arange(_MEF_WINDOW, dtype=dtype, device=device) - _MEF_WINDOW // 2
    g1 = torch.exp(-(x**2) / (2 * _MEF_SIGMA**2))
    return box, g1 / g1.sum()


def _mef_reference(x: torch.Tensor, box: torch.Tensor, gauss: torch.Tensor) -> dict[str, torch.Tensor]:
    """What one scale of MEF-SSIM needs of the stack alone (the desired patch's statistics), so that
    several fused images are scored against one stack at the cost of one. x: (B, K, H, W) on the
    [0, 255] scale; box and gauss: 1-D windows (w,)."""
    k = x.shape[1]
    wsize = box.shape[0]
    n = wsize * wsize
    # Every statistic below is a (co)variance, unchanged by a constant added to a frame: each frame
    # is centred on its mean first, so float32 keeps their precision (uncentred, a 10-frame stack
    # scored 0.734 in float32 against 0.771 in float64; centred, within 1e-4).
    x = x - x.mean(dim=(-2, -1), keepdim=True)

    mu = separable_filter(x, box)  # patch means (B, K, h, w)
    var = (separable_filter(x * x, box) - mu * mu).clamp_min(0.0)
    strength = torch.sqrt(n * var)  # ||x_k - mu_k|| over the patch
    ed = strength + 0.001

    # Structure consistency R of the patches decides how strongly the strongest patch dominates.
    s = x.sum(dim=1, keepdim=True)
    mu_s = separable_filter(s, box)
    var_s = (separable_filter(s * s, box) - mu_s * mu_s).clamp_min(0.0)
    r = (torch.sqrt(n * var_s) + _MATLAB_EPS) / (strength.sum(dim=1, keepdim=True) + _MATLAB_EPS)
    r = torch.where(r > 1, torch.full_like(r, 1 - _MATLAB_EPS), r)
    r = torch.where(r < 0, torch.full_like(r, _MATLAB_EPS), r)
    p = torch.tan(math.pi / 2 * r)
    # r near 1: tan overflows to a huge value, or (rounding past pi/2 in float32) a negative one; both mean 10
    p = torch.where((p < 0) | (p > 10.0), torch.full_like(p, 10.0), p)

    weight = (ed / wsize) ** p + _MATLAB_EPS
    weight = weight / weight.sum(dim=1, keepdim=True)
    a = weight / ed  # the desired patch is sum_k a_k (x_k - mu_k), rescaled to the largest strength

    g_x = separable_filter(x, gauss)
    # The desired patch's energy and its Gaussian-weighted second moment need the K x K products
    # x_i x_j filtered, weighted by a_i a_j: sum_ij a_i a_j box(x_i x_j) - (sum_i a_i mu_i)^2, and
    # sum_ij a_i a_j gauss(x_i x_j) - 2 (sum_i a_i mu_i)(sum_i a_i g_i) + (sum_i a_i mu_i)^2.
    # One batched filter per row i (j >= i, off-diagonal terms twice): memory O(K) maps.
    a_mu, a_g = (a * mu).sum(dim=1), (a * g_x).sum(dim=1)
    quad_box = torch.zeros_like(a_mu)
    quad_gauss = torch.zeros_like(a_mu)
    for i in range(k):
        prods = x[:, i : i + 1] * x[:, i:]  # (B, K - i, H, W)
        coef = a[:, i : i + 1] * a[:, i:]
        coef[:, 1:] *= 2.0
        quad_box += (coef * separable_filter(prods, box)).sum(dim=1)
        quad_gauss += (coef * separable_filter(prods, gauss)).sum(dim=1)
    norm2 = n * (quad_box - a_mu * a_mu)
    e_r2 = quad_gauss - 2.0 * a_mu * a_g + a_mu * a_mu
    norm = torch.sqrt(norm2.clamp_min(0.0))
    beta = torch.where(
        norm > 0, ed.amax(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(norm)
    )
    mu1 = beta * (a * (g_x - mu)).sum(dim=1)
    return {"x": x, "mu": mu, "a": a, "beta": beta, "mu1": mu1, "sigma1_sq": beta * beta * e_r2 - mu1 * mu1}


def _mef_score(ref: dict[str, torch.Tensor], f: torch.Tensor, gauss: torch.Tensor) -> torch.Tensor:
    """One scale of MEF-SSIM of a fused image against a stack's :func:`_mef_reference`.
    f: (B, 1, H, W) on the [0, 255] scale -> (B,)."""
    c = (_MEF_K * 255.0) ** 2
    f = f - f.mean(dim=(-2, -1), keepdim=True)  # as the frames (see _mef_reference)
    g = separable_filter(torch.cat([f, f * f, ref["x"] * f], dim=1), gauss)
    g_f, g_ff, g_xf = g[:, 0], g[:, 1], g[:, 2:]
    sigma2_sq = g_ff - g_f * g_f
    sigma12 = ref["beta"] * (ref["a"] * (g_xf - ref["mu"] * g_f[:, None])).sum(dim=1) - ref["mu1"] * g_f
    q = (2 * sigma12 + c) / (ref["sigma1_sq"] + sigma2_sq + c)
    return q.flatten(1).mean(dim=1)


class MefSsim:
    """Single-scale MEF-SSIM of many fused images against one stack: the stack's part is computed
    once (it is most of the cost). frames: (B, K, C, H, W) in [0, 1]; ``score(fused)`` with fused
    (B, C, H, W) in [0, 1] -> float in [-1, 1], the same as ``mef_ssim(frames, fused, levels=1)``."""

    def __init__(self, frames: torch.Tensor) -> None:
        if frames.ndim != 5 or min(frames.shape[-2:]) < _MEF_WINDOW:
            raise ValueError(f"expected frames (B, K, C, H, W) of at least 11x11, got {tuple(frames.shape)}")
        self.shape = frames.shape
        self.dtype = torch.promote_types(frames.dtype, torch.float32)
        self.box, self.gauss = _windows(frames.device, self.dtype)
        self.ref = _mef_reference(_grey(frames.to(self.dtype)) * 255.0, self.box, self.gauss)

    def score(self, fused: torch.Tensor) -> float:
        if fused.shape != (self.shape[0], *self.shape[2:]):
            raise ValueError(f"expected fused {(self.shape[0], *self.shape[2:])}, got {tuple(fused.shape)}")
        f = _grey(fused.to(self.dtype))[:, None] * 255.0
        return float(_mef_score(self.ref, f, self.gauss).mean())


def _downsample(t: torch.Tensor) -> torch.Tensor:
    """2x2 mean then every second pixel; an odd last row/column is paired with itself."""
    h, w = t.shape[-2:]
    t = F.pad(t, (0, w % 2, 0, h % 2), mode="replicate") if (h % 2 or w % 2) else t
    return F.avg_pool2d(t, 2)


def mef_ssim(frames: torch.Tensor, fused: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """MEF-SSIM (Ma, Zeng, Wang 2015): how well ``fused`` keeps the best local structure of the stack.

    Computed on grey images (Rec.601 luma for C = 3, the channel mean otherwise) on the [0, 255]
    scale, in the inputs' dtype (at least float32; differentiable, so it can be a training loss), at
    ``levels`` scales combined as a weighted product (negative scale scores are
    clamped to 0 before the product). 1 means the fused image has, everywhere, the structure of the
    consistency-weighted stack at the strongest contrast found in the stack.
    frames: (B, K, C, H, W) in [0, 1]; fused: (B, C, H, W) in [0, 1]; min(H, W) >= 11 * 2^(levels-1)
    -> 0-dim tensor in [-1, 1].
    """
    if frames.ndim != 5 or fused.ndim != 4 or frames.shape[0] != fused.shape[0] or frames.shape[2:] != fused.shape[1:]:
        raise ValueError(
            f"expected frames (B, K, C, H, W) and fused (B, C, H, W), got {tuple(frames.shape)} and "
            f"{tuple(fused.shape)}"
        )
    if not 1 <= levels <= len(_MEF_SCALE_WEIGHTS):
        raise ValueError(f"levels must be 1..{len(_MEF_SCALE_WEIGHTS)}, got {levels}")
    min_side = _MEF_WINDOW * 2 ** (levels - 1)
    if min(fused.shape[-2:]) < min_side:
        raise ValueError(
            f"mef_ssim with {levels} scales needs images of at least {min_side}x{min_side}, got "
            f"{tuple(fused.shape[-2:])}"
        )

    dev, f64 = fused.device, torch.promote_types(fused.dtype, torch.float32)
    x = _grey(frames.to(f64)) * 255.0  # (B, K, H, W)
    f = _grey(fused.to(f64))[:, None] * 255.0  # (B, 1, H, W)
    box, gauss = _windows(dev, f64)

    weights = torch.tensor(_MEF_SCALE_WEIGHTS[:levels], dtype=f64, device=dev)
    weights = weights / weights.sum()
    score = torch.ones(x.shape[0], dtype=f64, device=dev)
    for level in range(levels):
        q = _mef_score(_mef_reference(x, box, gauss), f, gauss)
        score = score * q.clamp_min(0.0) ** weights[level] if levels > 1 else q
        if level + 1 < levels:
            x, f = _downsample(x), _downsample(f)
    return score.mean().to(fused.dtype)


#: Longest side at which :func:`global_contrast` looks at an image: the picture's tonal layout, not its texture.
CONTRAST_SIDE = 256


def global_contrast(x: torch.Tensor, side: int = CONTRAST_SIDE) -> torch.Tensor:
    """How much the picture's brightness varies across it: the standard deviation of its Rec.601
    luma (display-referred, [0, 1]) area-downscaled to a longest side of ``side``. Fusion's usual
    defect is a low one: a flat, lifted "HDR look" (a night turned to dusk).
    x (B, C, H, W) display-referred [0, 1] -> (B,) >= 0."""
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
    grey = _grey(x)[:, None]
    h, w = grey.shape[-2:]
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.adaptive_avg_pool2d(grey, size) if size != (h, w) else grey
    return small.flatten(1).std(dim=1, unbiased=False)
