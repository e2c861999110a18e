"""The fusion network and its model files.

FuseNet predicts, for every pixel, one weight per exposure (``weight_mode="frame"``) or per exposure
and channel (``"channel"``), softmax-normalised over the K frames; the fused image is the weighted
sum of the frames. The design follows MEF-Net (Ma et al. 2019) for speed at any resolution:

1. the stack is area-downsampled so its longest side is about ``lowres`` pixels;
2. a small network shared by every frame (so any K works) turns per-frame features into weight
   logits at that low resolution. Its inputs do not depend on the channel count C: the mean, max and
   min over channels, the log of the exposure-normalised brightness (an estimate of scene radiance)
   and the log of the frame's ratio. Each layer also sees the mean over frames of the previous
   layer (DeepSets-style cross-frame context), so the network is equivariant to the order of the
   frames when their ratios come with them;
3. a fast guided filter (He & Sun 2015) brings the logits back to full resolution, guided by each
   frame's own brightness, so edges stay sharp; the full-resolution work is a few element-wise
   passes: two bilinear upsamplings, one multiply-add, the softmax and the weighted sum.

Per-channel weights (``weight_mode="channel"``) add a small head shared by every channel: from the
frame's features and that channel's own value and exposure-normalised log value, it corrects the
frame's logit per channel. So a channel that clipped in the 1/1 frame (green first, on most sensors)
can come from a darker frame while the others do not, which keeps colour ratios in highlights, and
the same weights file still works for any C.

A model file is ``NAME.safetensors`` (weights; loading never unpickles) plus ``NAME.json`` (format,
architecture, supported C and K, input domain, loss configuration, training data, fusecli version).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusecli import __version__, config
from fusecli.errors import FuseError

FORMAT = "fusecli-model"
FORMAT_VERSION = 1
N_FEATURES = 5


@dataclass
class ModelConfig:
    """Architecture of FuseNet (what a model file's sidecar records)."""

    width: int = 24
    depth: int = 5  # dilated 3x3 layers after the first one (dilations 1, 2, 4, 8, ...)
    weight_mode: Literal["frame", "channel"] = "frame"
    lowres: int = 128  # longest side of the stack the network sees
    gf_radius: int = 1  # guided filter radius, in low-resolution pixels
    gf_eps: float = 1e-3  # guided filter regularisation (guide in [0, 1])

    def __post_init__(self) -> None:
        if self.weight_mode not in ("frame", "channel"):
            raise FuseError(f"model configuration: weight_mode must be 'frame' or 'channel', got {self.weight_mode!r}")
        if self.width < 1 or self.depth < 0 or self.lowres < 8 or self.gf_radius < 0 or self.gf_eps <= 0:
            raise FuseError(f"model configuration: invalid sizes in {self}")

    @classmethod
    def from_dict(cls, data: dict, source: str = "model configuration") -> "ModelConfig":
        return config.from_dict(cls, data, source, "model")

    def weight_channels(self, c: int) -> int:
        """Weight maps per frame for a stack of C channels: 1 (per frame) or C (per frame and channel)."""
        return 1 if self.weight_mode == "frame" else c


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window of in-image pixels. x: (N, C, H, W) -> same shape."""
    if r == 0:
        return x
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def _interp_matrix(n_out: int, n_in: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) linear interpolation weights, as F.interpolate(mode="bilinear", align_corners=False)."""
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp_(0, n_in - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_(max=n_in - 1)
    frac = pos - lo
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m[torch.arange(n_out), lo] += 1 - frac
    m[torch.arange(n_out), hi] += frac
    return m.to(device=like.device, dtype=like.dtype)


def guided_coefficients(
    guide_lr: torch.Tensor, target_lr: torch.Tensor, r: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution fit target ~ A * guide + b of the guided filter (He et al. 2010), box-averaged.

    guide_lr (N, 1, h, w), target_lr (N, M, h, w) -> A, b (N, M, h, w).
    """
    mean_i = _box(guide_lr, r)
    mean_p = _box(target_lr, r)
    cov = _box(guide_lr * target_lr, r) - mean_i * mean_p
    var = _box(guide_lr * guide_lr, r) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return _box(a, r), _box(b, r)


def upsample_rows(coef: torch.Tensor, rows: slice, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (N, M, h, w) to (height, width), only for output
    ``rows``: exactly the rows a whole-image upsampling would give, so banded and whole-image results
    agree. Vertically a (rows, h) interpolation matrix (small); horizontally PyTorch's linear
    interpolation, O(rows * width) (a dense (w, width) matrix product cost 30x more at 12 MP)."""
    n, m, h, w = coef.shape
    wy = _interp_matrix(height, h, coef)[rows]
    tall = wy @ coef  # (rows, h) @ (N, M, h, w) -> (N, M, rows, w)
    if w == width:
        return tall
    wide = F.interpolate(tall.reshape(n * m, tall.shape[-2], w), size=width, mode="linear", align_corners=False)
    return wide.view(n, m, -1, width)


def fast_guided_filter(
    guide_lr: torch.Tensor, target_lr: torch.Tensor, guide_hr: torch.Tensor, r: int, eps: float
) -> torch.Tensor:
    """Fast guided filter (He & Sun 2015): fit target ~ A * guide + b at low resolution, apply at full
    resolution. guide_lr (N, 1, h, w), target_lr (N, M, h, w), guide_hr (N, 1, H, W) -> (N, M, H, W).
    kornia's guided_blur takes full-resolution inputs (its subsample option resamples them again);
    here the target is born at low resolution, so the low-resolution fit is done directly.
    """
    a, b = guided_coefficients(guide_lr, target_lr, r, eps)
    height, width = guide_hr.shape[-2:]
    rows = slice(0, height)
    return torch.addcmul(upsample_rows(b, rows, height, width), upsample_rows(a, rows, height, width), guide_hr)


def frame_features(frames: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """Per-frame inputs of the network, independent of C.

    frames (B, K, C, h, w) in [0, 1]; ratios (B, K) in (0, 1] -> (B, K, 5, h, w): channel mean,
    max and min, log2 of the exposure-normalised mean / 16, log2(ratio) / 8.
    """
    mean = frames.mean(dim=2, keepdim=True)
    feats = [mean, frames.amax(dim=2, keepdim=True), frames.amin(dim=2, keepdim=True)]
    log_ratio = torch.log2(ratios.clamp_min(1e-6)).to(frames.dtype)[:, :, None, None, None]
    feats.append((torch.log2(mean + 1.0 / 1024) - log_ratio) / 16.0)
    feats.append((log_ratio / 8.0).expand_as(mean))
    return torch.cat(feats, dim=2)


class FuseNet(nn.Module):
    """forward(frames, ratios) -> (fused, weights).

    frames (B, K, C, H, W) in [0, 1], brightest first; ratios (B, K) in (0, 1] -> fused (B, C, H, W)
    in [0, 1] and weights (B, K, 1 or C, H, W), >= 0, summing to 1 over K at every pixel.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        w = cfg.width
        self.inp = nn.Conv2d(2 * N_FEATURES, w, 3, padding=1)
        self.layers = nn.ModuleList(nn.Conv2d(2 * w, w, 3, padding=2**i, dilation=2**i) for i in range(cfg.depth))
        self.out = nn.Conv2d(2 * w, 1, 1)
        if (
            cfg.weight_mode == "channel"
        ):  # shared by every channel: (frame features, channel value, log value) -> correction
            self.channel_head = nn.Sequential(nn.Conv2d(2 * w + 2, w, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 1, 1))

    @staticmethod
    def _with_context(h: torch.Tensor, b: int, k: int) -> torch.Tensor:
        """(B*K, F, h, w) -> (B*K, 2F, h, w): each frame's features with the mean over its stack."""
        hk = h.view(b, k, *h.shape[1:])
        ctx = hk.mean(dim=1, keepdim=True).expand_as(hk)
        return torch.cat([hk, ctx], dim=2).flatten(0, 1)

    def logits(self, frames: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
        """Low-resolution weight logits. frames (B, K, C, h, w), ratios (B, K) -> (B, K, Cw, h, w)."""
        b, k = frames.shape[:2]
        h = frame_features(frames, ratios).flatten(0, 1)
        h = F.leaky_relu(self.inp(self._with_context(h, b, k)), 0.2)
        for layer in self.layers:
            h = F.leaky_relu(layer(self._with_context(h, b, k)), 0.2) + h
        h = self._with_context(h, b, k)  # (B*K, 2W, h, w)
        logits = self.out(h).view(b, k, 1, *h.shape[-2:])
        if self.config.weight_mode == "frame":
            return logits
        c = frames.shape[2]
        log_ratio = torch.log2(ratios.clamp_min(1e-6)).to(frames.dtype)[:, :, None, None, None]
        per_channel = torch.stack(
            [frames, (torch.log2(frames + 1.0 / 1024) - log_ratio) / 16.0], dim=3
        )  # (B, K, C, 2, h, w)
        shared = h.view(b, k, 1, *h.shape[1:]).expand(b, k, c, *h.shape[1:])
        x = torch.cat([shared, per_channel], dim=3).flatten(0, 2)
        return logits + self.channel_head(x).view(b, k, c, *h.shape[-2:])

    def check_input(self, frames: torch.Tensor, ratios: torch.Tensor) -> None:
        if frames.ndim != 5 or ratios.shape != frames.shape[:2]:
            raise ValueError(
                f"expected frames (B, K, C, H, W) and ratios (B, K), got {tuple(frames.shape)} and "
                f"{tuple(ratios.shape)}"
            )
        if frames.shape[1] < 2:
            raise FuseError(f"a stack needs at least 2 frames, got K = {frames.shape[1]}")

    def forward(
        self, frames: torch.Tensor, ratios: torch.Tensor, band_rows: int | None = None, keep_weights: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``band_rows`` processes the full-resolution stage in bands of that many rows (the result
        is the same); ``keep_weights=False`` returns no weights (saves K maps of memory)."""
        self.check_input(frames, ratios)
        b, k, c, height, width = frames.shape
        factor = max(1, math.ceil(max(height, width) / self.config.lowres))
        flat = frames.flatten(0, 1)
        small = F.avg_pool2d(flat, factor, ceil_mode=True) if factor > 1 else flat
        logits_lr = self.logits(small.view(b, k, c, *small.shape[-2:]), ratios)
        coef_a, coef_b = guided_coefficients(
            small.mean(dim=1, keepdim=True), logits_lr.flatten(0, 1), self.config.gf_radius, self.config.gf_eps
        )
        step = band_rows or height
        bands_fused, bands_weights = [], []
        for y0 in range(0, height, step):
            rows = slice(y0, min(height, y0 + step))
            band = frames[..., rows, :]
            guide = band.flatten(0, 1).mean(dim=1, keepdim=True)
            logits = torch.addcmul(
                upsample_rows(coef_b, rows, height, width), upsample_rows(coef_a, rows, height, width), guide
            )
            weights = torch.softmax(logits.view(b, k, -1, *guide.shape[-2:]), dim=1)
            fused = weights[:, 0] * band[:, 0]
            for j in range(1, k):  # frame by frame: no (B, K, C, rows, W) product in memory
                fused = torch.addcmul(fused, weights[:, j], band[:, j])
            bands_fused.append(fused)
            if keep_weights:
                bands_weights.append(weights)
        fused = torch.cat(bands_fused, dim=-2) if len(bands_fused) > 1 else bands_fused[0]
        if not keep_weights:
            return fused, None
        weights = torch.cat(bands_weights, dim=-2) if len(bands_weights) > 1 else bands_weights[0]
        return fused, weights


# --- model files ----------------------------------------------------------------------------------


def default_model_path() -> Path:
    """The bundled default model (``models/default.safetensors``, installed as package data)."""
    return Path(str(resources.files("fusecli.models").joinpath("default.safetensors")))


def _paths(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_model(path: Path, model: FuseNet, meta: dict | None = None) -> tuple[Path, Path]:
    """Write ``PATH.safetensors`` and ``PATH.json`` (each atomically). Returns both paths."""
    from safetensors.torch import save_file

    from fusecli.io.common import atomic_path

    weights_path, json_path = _paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fusecli_version": __version__,
        "architecture": {"name": "FuseNet", **asdict(model.config)},
        "supports": {"channels": "any", "frames": "any K >= 2"},
        "input_domain": "frames (B, K, C, H, W) linear in [0, 1], not scaled by exposure, brightest first, "
        "with ratios (B, K) <= 1",
        **(meta or {}),
    }
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    return weights_path, json_path


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a model file, checked for format."""
    _, json_path = _paths(path)
    if not json_path.is_file():
        raise FuseError(f"{json_path}: model sidecar not found (a model is NAME.safetensors + NAME.json)")
    try:
        sidecar = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FuseError(f"{json_path}: not a readable model sidecar ({e})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise FuseError(f"{json_path}: not a fusecli model sidecar (format is not {FORMAT!r})")
    if sidecar.get("format_version", 0) > FORMAT_VERSION:
        raise FuseError(
            f"{json_path}: model format {sidecar['format_version']} is newer than this fusecli reads ({FORMAT_VERSION})"
        )
    return sidecar


def load_model(path: Path | None = None, device: torch.device | str = "cpu") -> tuple[FuseNet, dict]:
    """Load a model file (default: the bundled one) without unpickling anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, json_path = _paths(path if path is not None else default_model_path())
    if not weights_path.is_file():
        raise FuseError(f"{weights_path}: model file not found")
    sidecar = read_sidecar(json_path)
    arch = dict(sidecar.get("architecture", {}))
    if arch.pop("name", None) != "FuseNet":
        raise FuseError(f"{json_path}: unknown architecture {sidecar.get('architecture', {}).get('name')!r}")
    model = FuseNet(ModelConfig.from_dict(arch, source=str(json_path)))
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise FuseError(f"{weights_path}: truncated or not a safetensors file ({e})") from None
    bad = [name for name, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise FuseError(f"{weights_path}: non-finite (NaN or Inf) weights in {', '.join(bad[:3])}; the model is broken")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FuseError(
            f"{weights_path}: weights do not match the architecture in {json_path.name} ({first})"
        ) from None
    return model.to(device).eval(), sidecar
