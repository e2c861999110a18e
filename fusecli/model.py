"""The fusion network and its model files.

FuseNet predicts, for every pixel, one weight per exposure (``weight_mode="frame"``) or per
exposure and channel (``"channel"``), softmax-normalised over the K frames, and blends the frames
with them across a Laplacian pyramid. The weights are exposure fusion's (Mertens et al. 2007:
contrast x saturation x well-exposedness, computed on the display-encoded frames) times a learned,
smooth correction; the network starts from the classical result (a zero correction) and learns
where to depart from it. docs/model.md says what it does; docs/design.md ("Fusion") why.

A model file is ``NAME.safetensors`` (weights; loading never unpickles) plus ``NAME.json`` (format,
architecture, supported C and K, input domains, loss configuration, training data, fusecli version).
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
from fusecli.blend import (
    area_down,
    exposure_log_weight,
    quality_measures,
    reconstruct_highlights,
    srgb_decode,
    srgb_encode,
    structure_blend,
)
from fusecli.errors import FuseError

FORMAT = "fusecli-model"
FORMAT_VERSION = 2
ARCHITECTURE = "FuseNet-pyramid"
N_FEATURES = 9
#: The reference frame is the one an auto-exposure would have chosen: its median display-referred
#: brightness nearest this mid-grey (18 % grey in sRGB).
MID_GREY = 0.46


@dataclass
class ModelConfig:
    """Architecture of FuseNet (what a model file's sidecar records)."""

    width: int = 24
    depth: int = 5  # dilated 3x3 layers after the first one (dilations 1, 2, 4, 8, ...)
    weight_mode: Literal["frame", "channel"] = "channel"
    lowres: int = 128  # longest side of the stack the network sees
    blend_side: int = 800  # longest side up to which the pyramid blend runs at full resolution
    #: How much of the learned correction display-referred stacks (camera JPEG/PNG) get when fusing
    #: (not in training, which learns the whole correction): 0 is exposure fusion's weights, 1 all of
    #: the correction. Set on a trained model's sidecar (docs/model.md).
    display_correction: float = 1.0

    def __post_init__(self) -> None:
        if self.weight_mode not in ("frame", "channel"):
            raise FuseError(f"model configuration: weight_mode must be 'frame' or 'channel', got {self.weight_mode!r}")
        if self.width < 1 or self.depth < 0 or self.lowres < 8 or self.blend_side < self.lowres:
            raise FuseError(f"model configuration: invalid sizes in {self}")
        if not 0.0 <= self.display_correction <= 1.0:
            raise FuseError(f"model configuration: display_correction must be in [0, 1], got {self.display_correction}")

    @classmethod
    def from_dict(cls, data: dict, source: str = "model configuration") -> "ModelConfig":
        return config.from_dict(cls, data, source, "model")

    def weight_channels(self, c: int) -> int:
        """Weight maps per frame for a stack of C channels: 1 (per frame) or C (per frame and channel)."""
        return 1 if self.weight_mode == "frame" else c


def _interp_rows(rows: slice, n_out: int, n_in: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For output ``rows`` of ``n_out``, the two input rows of ``n_in`` and the weight of the second,
    as F.interpolate(mode="bilinear", align_corners=False) uses them -> (lo, hi, frac), each (rows,)."""
    y = torch.arange(rows.start, rows.stop, dtype=torch.float64)
    pos = ((y + 0.5) * (n_in / n_out) - 0.5).clamp_(0, n_in - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_(max=n_in - 1)
    frac = (pos - lo).to(device=like.device, dtype=like.dtype)
    return lo.to(like.device), hi.to(like.device), frac


def upsample_rows(coef: torch.Tensor, rows: slice, height: int, width: int) -> torch.Tensor:
    """Bilinear upsampling (align_corners=False) of (N, M, h, w) to (height, width), only for output
    ``rows``: exactly the rows a whole-image upsampling would give, so banded and whole-image results
    agree. Vertically each output row mixes its two input rows (O(rows * w)); horizontally PyTorch's
    linear interpolation, O(rows * width), not a dense (rows, h) interpolation matrix, whose cost
    grows with the blend size."""
    n, m, h, w = coef.shape
    lo, hi, frac = _interp_rows(rows, height, h, coef)
    tall = torch.lerp(coef.index_select(2, lo), coef.index_select(2, hi), frac[:, None])  # (N, M, rows, w)
    if w == width:
        return tall
    if tall.device.type == "cuda":
        # PyTorch's CUDA kernel for 1-D linear upsampling runs one thread per output column, each looping
        # over every row; the 2-D bilinear kernel with the height unchanged runs one per output pixel and
        # gives the same values (vertical weights exactly 1 and 0). On the CPU the 1-D one is faster.
        return F.interpolate(tall, size=(tall.shape[-2], width), mode="bilinear", align_corners=False)
    wide = F.interpolate(tall.reshape(n * m, tall.shape[-2], w), size=width, mode="linear", align_corners=False)
    return wide.view(n, m, -1, width)


def reference_frame(frames: torch.Tensor) -> torch.Tensor:
    """The normal exposure of each stack: the frame whose median display-referred brightness is
    nearest :data:`MID_GREY` (what an auto-exposure picks; the brighter frame on a tie).
    frames (B, K, C, h, w) linear [0, 1], brightest first -> (B,) long indices."""
    grey = srgb_encode(frames.detach()).mean(dim=2).flatten(2)  # (B, K, h*w)
    median = grey.median(dim=-1).values
    return (median - MID_GREY).abs().argmin(dim=1)


#: Log-weight taken from a frame where any channel clipped and a darker frame did not (see clip_penalty).
CLIP_PENALTY = 12.0


def clip_penalty(encoded: torch.Tensor) -> torch.Tensor:
    """Where a frame clipped in any channel and a darker frame holds the pixel unclipped, the frame
    gives way: a weighted sum of frames that are not scaled by exposure cannot keep the colour of a
    partly clipped pixel (its clipped channel is too low), so a clipped frame there casts its hue
    (the pink highlights of the demo). Ramps in over the top 5 % of the encoded range, per frame
    (every channel alike, so colour comes from one exposure).

    encoded (B, K, C, H, W) display-encoded [0, 1], brightest first -> (B, K, 1, H, W) >= 0 (a
    constant: no gradient)."""
    with torch.no_grad():
        clipped = ((encoded.amax(dim=2, keepdim=True) - 0.95) / 0.05).clamp(0.0, 1.0)
        unclipped = 1.0 - clipped
        # the best unclipped share among the darker frames j > k: a reverse running maximum, shifted
        # (a loop over the K frames: torch.cummax over a short middle dimension is far slower)
        later = [torch.zeros_like(unclipped[:, 0])]
        for j in range(encoded.shape[1] - 1, 0, -1):
            later.append(torch.maximum(later[-1], unclipped[:, j]))
        return CLIP_PENALTY * clipped * torch.stack(later[::-1], dim=1)


def frame_features(
    frames: torch.Tensor, ratios: torch.Tensor, reference: torch.Tensor, display_referred: torch.Tensor
) -> torch.Tensor:
    """Per-frame inputs of the network, independent of C.

    frames (B, K, C, h, w) linear [0, 1]; ratios (B, K) in (0, 1]; reference (B,); display_referred
    (B,) 1 for frames decoded from camera JPEG/PNG (through a camera tone curve), 0 for
    scene-referred ones (RAW, linear TIFF) -> (B, K, 9, h, w): channel mean, max and min, log2 of the
    exposure-normalised mean / 16, log2 of the exposure relative to the reference frame / 8, exposure
    fusion's log contrast, saturation and well-exposedness / 16
    (:func:`fusecli.blend.quality_measures`), and the domain flag.
    """
    mean = frames.mean(dim=2, keepdim=True)
    feats = [mean, frames.amax(dim=2, keepdim=True), frames.amin(dim=2, keepdim=True)]
    log_ratio = torch.log2(ratios.clamp_min(1e-6)).to(frames.dtype)
    rel = log_ratio - log_ratio.gather(1, reference[:, None])
    feats.append((torch.log2(mean + 1.0 / 1024) - log_ratio[:, :, None, None, None]) / 16.0)
    feats.append((rel[:, :, None, None, None] / 8.0).expand_as(mean))
    feats.append(quality_measures(srgb_encode(frames)) / 16.0)
    feats.append(display_referred.to(frames.dtype)[:, None, None, None, None].expand_as(mean))
    return torch.cat(feats, dim=2)


class FuseNet(nn.Module):
    """forward(frames, ratios) -> (fused, weights).

    frames (B, K, C, H, W) linear [0, 1], brightest first; ratios (B, K) in (0, 1] -> fused
    (B, C, H, W) linear [0, 1] and weights (B, K, 1 or C, H, W), >= 0, summing to 1 over K.

    1. Up to ``blend_side`` (longest side), the stack is area-downsampled to the blend size.
    2. At the blend size, exposure fusion's log weight of every frame (the classical prior) is
       computed on the display-encoded frames.
    3. A small network shared by every frame (any K) sees the stack at ``lowres`` and predicts a
       correction to those log weights, per frame (and per channel), upsampled smoothly; each layer
       also sees the mean over frames of the previous layer (DeepSets-style context). The last
       layers start at zero, so an untrained network is exposure fusion. When fusing (eval mode),
       display-referred stacks get ``config.display_correction`` of it.
    4. The display-encoded frames are blended with the softmax of the corrected log weights: the
       tone across a Laplacian pyramid, each patch's structure at the strongest contrast the frames
       hold there (:func:`fusecli.blend.structure_blend`); then decoded back to linear.
    5. Above the blend size, the detail the blend size cannot hold (each frame minus its
       downsampled self) is added at full resolution with the smooth per-frame weights (in bands
       of rows); the weights returned there are per frame (B, K, 1, H, W).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ModelConfig()
        w = cfg.width
        self.inp = nn.Conv2d(2 * N_FEATURES, w, 3, padding=1)
        self.layers = nn.ModuleList(nn.Conv2d(2 * w, w, 3, padding=2**i, dilation=2**i) for i in range(cfg.depth))
        self.out = nn.Conv2d(2 * w, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if (
            cfg.weight_mode == "channel"
        ):  # shared by every channel: (frame features, channel value, log value) -> correction
            self.channel_head = nn.Sequential(nn.Conv2d(2 * w + 2, w, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 1, 1))
            nn.init.zeros_(self.channel_head[2].weight)
            nn.init.zeros_(self.channel_head[2].bias)

    @staticmethod
    def _conv_with_context(conv: nn.Conv2d, h: torch.Tensor, b: int, k: int) -> torch.Tensor:
        """``conv`` of each frame's features concatenated with their mean over its stack (DeepSets-style
        context), channels last. h (B*K, h, w, F) contiguous -> (B*K, h, w, out) contiguous.

        The convolution is linear, so its context half runs once per stack on the mean, not once per
        frame; and channels last (oneDNN's preferred layout) made these small 3x3 convolutions 3x
        faster on CPU than channels first."""
        f = h.shape[-1]
        args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        own = F.conv2d(h.permute(0, 3, 1, 2), conv.weight[:, :f], conv.bias, **args).permute(0, 2, 3, 1)
        mean = h.view(b, k, *h.shape[1:]).mean(dim=1)
        ctx = F.conv2d(mean.permute(0, 3, 1, 2), conv.weight[:, f:], None, **args).permute(0, 2, 3, 1)
        return (own.reshape(b, k, *own.shape[1:]) + ctx[:, None]).flatten(0, 1)

    def correction(
        self, frames: torch.Tensor, ratios: torch.Tensor, reference: torch.Tensor, display_referred: torch.Tensor
    ) -> torch.Tensor:
        """Low-resolution correction of the log weights. frames (B, K, C, h, w) linear [0, 1], ratios
        (B, K), reference (B,), display_referred (B,) -> (B, K, Cw, h, w).

        Computed channels last; the 1x1 layers as matrix products, each split like
        :meth:`_conv_with_context` (a layer over the frame's features, the stack mean and a channel's
        values is the sum of three smaller products: the first two once per frame, not per channel)."""
        b, k, c = frames.shape[:3]
        h = frame_features(frames, ratios, reference, display_referred).flatten(0, 1)
        h = h.permute(0, 2, 3, 1).contiguous()  # (B*K, h, w, 9)
        h = F.leaky_relu(self._conv_with_context(self.inp, h, b, k), 0.2)
        for layer in self.layers:
            h = F.leaky_relu(self._conv_with_context(layer, h, b, k), 0.2) + h
        hk = h.view(b, k, *h.shape[1:])  # (B, K, h, w, W)
        mean = hk.mean(dim=1, keepdim=True)
        nw = h.shape[-1]

        def one_by_one(conv: nn.Conv2d) -> torch.Tensor:
            """conv's 1x1 weights over (frame features, stack mean) on hk -> (B, K, h, w, out)."""
            w = conv.weight[:, :, 0, 0]
            return hk @ w[:, :nw].T + mean @ w[:, nw : 2 * nw].T + conv.bias

        logits = one_by_one(self.out).permute(0, 1, 4, 2, 3)  # (B, K, 1, h, w)
        if self.config.weight_mode == "frame":
            return logits
        first, last = self.channel_head[0], self.channel_head[2]
        log_ratio = torch.log2(ratios.clamp_min(1e-6)).to(frames.dtype)[:, :, None, None, None]
        per_channel = torch.stack([frames, (torch.log2(frames + 1.0 / 1024) - log_ratio) / 16.0], dim=-1)
        hidden = one_by_one(first)[:, :, None] + per_channel @ first.weight[:, 2 * nw :, 0, 0].T  # (B, K, C, h, w, W)
        head = F.leaky_relu(hidden, 0.2) @ last.weight[0, :, 0, 0] + last.bias  # (B, K, C, h, w)
        return logits + head

    def check_input(self, frames: torch.Tensor, ratios: torch.Tensor) -> None:
        if frames.ndim != 5 or ratios.shape != frames.shape[:2]:
            raise ValueError(
                f"expected frames (B, K, C, H, W) and ratios (B, K), got {tuple(frames.shape)} and "
                f"{tuple(ratios.shape)}"
            )
        if frames.shape[1] < 2:
            raise FuseError(f"a stack needs at least 2 frames, got K = {frames.shape[1]}")

    def forward(
        self,
        frames: torch.Tensor,
        ratios: torch.Tensor,
        reference: torch.Tensor | None = None,
        *,
        band_rows: int | None = None,
        keep_weights: bool = True,
        display_referred: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``reference`` (B,) is each stack's normal exposure (default: :func:`reference_frame`);
        ``display_referred`` (B,) says which stacks were decoded from camera JPEG/PNG (default: none);
        ``band_rows`` processes the full-resolution stage in bands of that many rows (the result is
        the same); ``keep_weights=False`` returns no weights (saves K maps of memory)."""
        self.check_input(frames, ratios)
        b, k, c, height, width = frames.shape
        blend_factor = max(1, math.ceil(max(height, width) / self.config.blend_side))
        x_b = area_down(frames.flatten(0, 1), blend_factor)
        hb, wb = x_b.shape[-2:]
        x_b = x_b.view(b, k, c, hb, wb)
        if display_referred is None:
            display_referred = torch.zeros(b, device=frames.device)
        base, weights = self._blend(x_b, ratios, reference, display_referred)
        if blend_factor == 1:
            return base, (weights if keep_weights else None)
        maps = self._detail_maps(x_b, base, weights, keep_weights)
        del x_b, base, weights  # blend-size maps gone before the full-resolution output is allocated
        return self._detail(frames, *maps, band_rows)

    def _blend(self, x_b, ratios, reference, display_referred):
        """Steps 2-4 of the class docstring at the blend size: x_b (B, K, C, hb, wb) linear [0, 1] ->
        base (B, C, hb, wb) linear [0, 1] and weights (B, K, Cw, hb, wb). (Its own method so that its
        temporaries are gone before the full-resolution stage allocates the output.)"""
        b, k, c, hb, wb = x_b.shape
        net_factor = max(1, math.ceil(max(hb, wb) / self.config.lowres))
        small = area_down(x_b.flatten(0, 1), net_factor)
        small = small.view(b, k, c, *small.shape[-2:])
        if reference is None:
            reference = reference_frame(small)
        delta = self.correction(small, ratios, reference, display_referred)
        if not self.training and self.config.display_correction != 1.0:
            strength = torch.where(display_referred > 0.5, self.config.display_correction, 1.0)
            delta = delta * strength.to(delta.dtype)[:, None, None, None, None]
        if delta.shape[-2:] != (hb, wb):
            delta = F.interpolate(delta.flatten(0, 1), size=(hb, wb), mode="bilinear", align_corners=False)
            delta = delta.view(b, k, -1, hb, wb)
        # clipped pixels take the darker frame's colour: scene-referred stacks only (a camera's tone
        # curve breaks the exposure ratio between display-referred frames, and its JPEG engine has
        # already rendered their highlights)
        scene = display_referred < 0.5
        shown = x_b  # the detail stage adds the frames' own detail, not the reconstructed
        if bool(scene.all()):  # (fuse's one stack: no torch.where copy)
            shown = reconstruct_highlights(x_b, ratios)
        elif bool(scene.any()):
            shown = torch.where(scene[:, None, None, None, None], reconstruct_highlights(x_b, ratios), x_b)
        encoded = srgb_encode(shown)
        del shown
        prior = exposure_log_weight(encoded) - clip_penalty(encoded)  # (B, K, 1, hb, wb)
        weights = torch.softmax(prior + delta, dim=1)
        del prior, delta
        return srgb_decode(structure_blend(encoded, weights)), weights

    @staticmethod
    def _detail_maps(x_b, base, weights, keep_weights):
        """What the full-resolution stage upsamples, at the blend size: x_b (B, K, C, hb, wb), base
        (B, C, hb, wb), weights (B, K, Cw, hb, wb) -> coef (B, K, hb, wb), each frame's weight times
        the display encoding's local gain; low (B, C, hb, wb), what the base adds to the weighted
        frames; and the per-frame weights (B, K, hb, wb) when kept, else None."""
        b, k, _, hb, wb = x_b.shape
        # d enc / dx ~ x^(1/2.4 - 1): a frame's linear detail at brightness x shows as gain * detail at
        # the fused brightness.
        gain = ((x_b.mean(dim=2, keepdim=True) + 1e-3) / (base.mean(dim=1, keepdim=True)[:, None] + 1e-3)) ** (
            1 / 2.4 - 1
        )
        # detail takes one weight per frame (the mean over channels): K maps to upsample, not K x C
        frame_weights = weights.mean(dim=2, keepdim=True)
        coef = (frame_weights * gain.clamp(0.25, 4.0)).flatten(1, 2).contiguous()  # (B, K, hb, wb)
        low = (base - (coef.view(b, k, 1, hb, wb) * x_b).sum(dim=1)).contiguous()  # what the base adds
        return coef, low, (frame_weights.flatten(1, 2).contiguous() if keep_weights else None)

    def _detail(self, frames, coef, low, coef_w, band_rows):
        """Full resolution: the blended base, upsampled, plus each frame's detail above the blend
        size weighted by its (upsampled) weight times the display encoding's local gain (so detail
        keeps the contrast it had in the blend); maps from :meth:`_detail_maps`. Shapes as
        :meth:`forward`'s; in bands of rows."""
        b, k, c, height, width = frames.shape
        # One pass: each band of rows reads its rows of the frames once and writes its rows of the
        # output once; only the band's upsampled maps (BAND_BYTES) are temporaries (bench_mertens
        # times this stage against one read of the frames and one write of the output).
        fused = torch.empty(b, c, height, width, device=frames.device, dtype=low.dtype)
        out_weights = (
            torch.empty(b, k, 1, height, width, device=frames.device, dtype=low.dtype) if coef_w is not None else None
        )
        step = band_rows or height
        if frames.device.type == "cpu":  # bands that stay in the caches; a GPU wants few, large launches
            step = min(step, detail_rows(width, k, c))
        for y0 in range(0, height, step):
            rows = slice(y0, min(height, y0 + step))
            band = upsample_rows(low, rows, height, width)
            c_up = upsample_rows(coef, rows, height, width)
            for j in range(k - 1):  # frame by frame: no (B, K, C, rows, W) product
                band.addcmul_(c_up[:, j : j + 1], frames[:, j, :, rows])
            if torch.is_grad_enabled():  # (out= has no gradient)
                fused[..., rows, :] = torch.addcmul(band, c_up[:, k - 1 : k], frames[:, k - 1, :, rows])
            else:  # the last frame's product written straight into the output: no copy of the band
                torch.addcmul(band, c_up[:, k - 1 : k], frames[:, k - 1, :, rows], out=fused[..., rows, :])
            if out_weights is not None:  # per frame at full resolution (what a weight map shows)
                out_weights[..., rows, :] = upsample_rows(coef_w, rows, height, width)[:, :, None]
        return fused, out_weights


#: Bytes of a band's working set (its upsampled maps and its sum) in the full-resolution stage: large
#: enough that each band's dozen small operations do not dominate (bands that fit a core's L2 do).
BAND_BYTES = 16 * 2**20


def detail_rows(width: int, k: int, c: int) -> int:
    """Rows per band of the full-resolution stage for frames of ``width``, K frames and C channels."""
    return max(4, BAND_BYTES // (4 * width * (k + c)))


# --- model files ----------------------------------------------------------------------------------


def default_model_path() -> Path:
    """The bundled default model (``models/default.safetensors``, installed as package data; from a
    source checkout on PYTHONPATH, not installed, the ``models/`` folder beside the package)."""
    try:
        return Path(str(resources.files("fusecli.models").joinpath("default.safetensors")))
    except ModuleNotFoundError:  # fusecli.models exists only once installed (pyproject's package-dir)
        return Path(__file__).resolve().parents[1] / "models" / "default.safetensors"


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
        "architecture": {"name": ARCHITECTURE, **asdict(model.config)},
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
    version = sidecar.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FuseError(f"{json_path}: format_version must be a whole number, got {version!r}")
    for key in ("architecture", "loss"):
        if not isinstance(sidecar.get(key, {}), dict):
            raise FuseError(f"{json_path}: {key} must be a table (a JSON object), got {type(sidecar[key]).__name__}")
    if version > FORMAT_VERSION:
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
    if arch.pop("name", None) != ARCHITECTURE:
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
