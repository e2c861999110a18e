"""FuseNet: shapes, normalisation, equivariance, the classical prior, banding, model files."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from fusecli.blend import quality_measures, reconstruct_highlights, srgb_decode, srgb_encode, structure_blend
from fusecli.errors import FuseError
from fusecli.model import (
    FuseNet,
    ModelConfig,
    clip_penalty,
    default_model_path,
    load_model,
    reference_frame,
    save_model,
    upsample_rows,
)
from fusecli.synth import procedural_scene


def _stack(b, k, c, *, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    scene = torch.rand(b, 1, c, h, w, generator=g) * 3
    ratios = torch.tensor([[4.0**-i for i in range(k)]] * b)
    return (scene * ratios[:, :, None, None, None]).clamp(0, 1), ratios


def _trained_like(model: FuseNet, seed: int = 0) -> FuseNet:
    """The zero-initialised last layers made random, as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.abs().sum() == 0:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model.eval()


@pytest.mark.parametrize("k, c", [(2, 1), (3, 3), (3, 4), (5, 4)])
def test_shapes_and_normalised_weights(k, c):
    model = _trained_like(FuseNet(ModelConfig(weight_mode="frame")))
    frames, ratios = _stack(2, k, c)
    fused, weights = model(frames, ratios)
    assert fused.shape == (2, c, 40, 56) and weights.shape == (2, k, 1, 40, 56)
    assert torch.all(weights >= 0) and torch.allclose(weights.sum(1), torch.ones(2, 1, 40, 56), atol=1e-5)
    # the result is the structural blend of the display-encoded frames (clipped pixels given the
    # darker frame's colour) with those weights, decoded
    encoded = srgb_encode(reconstruct_highlights(frames, ratios))
    assert torch.allclose(fused, srgb_decode(structure_blend(encoded, weights)), atol=1e-6)


@pytest.mark.parametrize("c", [1, 3, 4])
def test_per_channel_weights_for_any_channel_count(c):
    model = _trained_like(FuseNet(ModelConfig(weight_mode="channel")))
    frames, ratios = _stack(1, 3, c)
    fused, weights = model(frames, ratios)
    assert weights.shape == (1, 3, c, 40, 56) and torch.allclose(weights.sum(1), torch.ones(1, c, 40, 56), atol=1e-5)
    assert fused.shape == (1, c, 40, 56) and torch.isfinite(fused).all()


def _plain_correction(model: FuseNet, frames, ratios, reference, display_referred):
    """The correction as its docstring defines it, written plainly (channels first, every layer over
    the concatenated features): what the split, channels-last code must equal."""

    from fusecli.model import frame_features

    b, k, c = frames.shape[:3]

    def with_context(h):  # (B*K, F, h, w) -> (B*K, 2F, h, w)
        hk = h.view(b, k, *h.shape[1:])
        return torch.cat([hk, hk.mean(dim=1, keepdim=True).expand_as(hk)], dim=2).flatten(0, 1)

    h = frame_features(frames, ratios, reference, display_referred).flatten(0, 1)
    h = F.leaky_relu(model.inp(with_context(h)), 0.2)
    for layer in model.layers:
        h = F.leaky_relu(layer(with_context(h)), 0.2) + h
    h = with_context(h)
    logits = model.out(h).view(b, k, 1, *h.shape[-2:])
    log_ratio = torch.log2(ratios)[:, :, None, None, None]
    per_channel = torch.stack([frames, (torch.log2(frames + 1.0 / 1024) - log_ratio) / 16.0], dim=3)
    shared = h.view(b, k, 1, *h.shape[1:]).expand(b, k, c, *h.shape[1:])
    x = torch.cat([shared, per_channel], dim=3).flatten(0, 2)
    return logits + model.channel_head(x).view(b, k, c, *h.shape[-2:])


def test_the_correction_equals_its_plain_formulation():
    model = _trained_like(FuseNet(ModelConfig(weight_mode="channel")), seed=3)
    frames, ratios = _stack(2, 3, 3, h=24, w=36)
    args = (frames, ratios, torch.tensor([0, 1]), torch.tensor([0.0, 1.0]))
    with torch.no_grad():
        fast, plain = model.correction(*args), _plain_correction(model, *args)
    assert fast.shape == (2, 3, 3, 24, 36) and plain.abs().max() > 0.1  # the layers are not zero
    assert torch.allclose(fast, plain, atol=1e-4, rtol=1e-4)


def test_an_untrained_network_is_exposure_fusion():
    """The last layers start at zero: the weights are Mertens et al.'s (contrast x saturation x
    well-exposedness on the display-encoded frames), less the clipped frames' penalty."""
    frames, ratios = _stack(1, 3, 3)
    _, weights = FuseNet().eval()(frames, ratios)
    encoded = srgb_encode(reconstruct_highlights(frames, ratios))
    prior = quality_measures(encoded).sum(dim=2, keepdim=True) - clip_penalty(encoded)
    assert torch.allclose(weights, torch.softmax(prior, dim=1).expand_as(weights), atol=1e-6)


def test_display_correction_scales_the_correction_of_display_referred_stacks_when_fusing():
    """display_correction 0.5: a display-referred stack's log-weight correction is halved when fusing
    (eval mode), a scene-referred one's is not, and training (train mode) sees the whole correction."""
    frames, ratios = _stack(2, 3, 3)
    shown = torch.tensor([1.0, 0.0])  # stack 0 from camera JPEGs, stack 1 scene-referred
    full = _trained_like(FuseNet(ModelConfig(display_correction=1.0)))
    half = FuseNet(ModelConfig(display_correction=0.5)).eval()
    half.load_state_dict(full.state_dict())
    none = FuseNet().eval()  # no correction at all: exposure fusion's weights

    def log_weights(model):
        with torch.no_grad():
            return model(frames, ratios, display_referred=shown)[1].clamp_min(1e-30).log()

    w_full, w_half, w_none = log_weights(full), log_weights(half), log_weights(none)
    # softmax is shift-invariant: compare log-weight differences between frames
    d_full, d_half, d_none = (w[:, 1:] - w[:, :1] for w in (w_full, w_half, w_none))
    assert torch.allclose(d_half[0], (d_full[0] + d_none[0]) / 2, atol=1e-4)
    assert not torch.allclose(d_half[0], d_full[0], atol=1e-2)
    assert torch.allclose(d_half[1], d_full[1], atol=1e-6)  # scene-referred: unchanged
    half.train()
    with torch.no_grad():
        assert torch.allclose(
            half(frames, ratios, display_referred=shown)[1], full.train()(frames, ratios, display_referred=shown)[1]
        )
    with pytest.raises(FuseError, match="display_correction"):
        ModelConfig(display_correction=1.5)


def test_a_clipped_frame_gives_way_to_a_darker_unclipped_one():
    frames = torch.tensor([[1.0, 0.9, 1.0], [0.5, 0.22, 0.3]]).view(1, 2, 3, 1, 1).expand(1, 2, 3, 4, 4)
    penalty = clip_penalty(srgb_encode(frames.contiguous()))
    assert penalty[0, 0].min() == pytest.approx(12.0) and penalty[0, 1].max() == 0  # the darkest never
    assert clip_penalty(srgb_encode(torch.ones(1, 2, 3, 4, 4))).max() < 1e-3  # nothing darker to give way to


def test_per_channel_weights_can_differ_between_channels():
    model = _trained_like(FuseNet(ModelConfig(weight_mode="channel")))
    frames, ratios = _stack(1, 3, 4)
    frames[:, 1, 1] = 0.9
    _, weights = model(frames, ratios)
    assert (weights[0, 1, 1] - weights[0, 1, 0]).abs().max() > 1e-3  # the head sees each channel


def test_equivariant_to_the_order_of_frames_given_with_their_ratios():
    """Frames given in another order, with their ratios and the reference moved along, get the same
    weights (the network is shared by every frame and sees the stack through means): away from
    clipping, where the clipped frames' penalty (which looks at the darker frames) is 0."""
    model = _trained_like(FuseNet(ModelConfig(weight_mode="channel")))
    frames, ratios = _stack(1, 4, 4, seed=1)
    frames = frames * 0.8  # nothing clips
    perm = torch.tensor([2, 0, 3, 1])
    fused, weights = model(frames, ratios, torch.tensor([1]))
    fused_p, weights_p = model(frames[:, perm], ratios[:, perm], torch.tensor([3]))  # frame 1 is now at 3
    assert torch.allclose(weights_p, weights[:, perm], atol=1e-5)
    assert torch.allclose(fused_p, fused, atol=1e-5)


def test_the_reference_is_the_exposure_nearest_mid_grey():
    scene = torch.rand(1, 1, 3, 32, 32) * 0.4 + 0.05
    frames = torch.cat([(scene * g).clamp(0, 1) for g in (16.0, 4.0, 1.0, 0.25)], dim=1)  # +4, +2, 0, -2 EV
    assert reference_frame(frames).tolist() == [2]
    phone = torch.cat([(scene * g).clamp(0, 1) for g in (1.0, 0.25, 0.0625)], dim=1)  # EV0, -2, -4
    assert reference_frame(phone).tolist() == [0]


def test_large_inputs_are_processed_at_low_resolution():
    model = FuseNet(ModelConfig(lowres=32)).eval()
    seen = []
    correction = model.correction
    model.correction = lambda frames, *rest: seen.append(tuple(frames.shape[-2:])) or correction(frames, *rest)
    frames, ratios = _stack(1, 3, 4, h=200, w=300)
    model(frames, ratios)
    assert seen == [(20, 30)]  # factor ceil(300 / 32) = 10


def test_above_the_blend_size_detail_is_added_and_bands_agree():
    model = _trained_like(FuseNet(ModelConfig(lowres=16, blend_side=48)))
    frames, ratios = _stack(1, 3, 3, h=90, w=120)
    whole, w_whole = model(frames, ratios)
    banded, w_banded = model(frames, ratios, band_rows=17)
    assert whole.shape == (1, 3, 90, 120) and w_whole.shape == (1, 3, 1, 90, 120)  # per frame up there
    assert torch.allclose(whole, banded, atol=1e-5) and torch.allclose(w_whole, w_banded, atol=1e-6)
    # one frame weighted everywhere gives that frame back, its full-resolution detail included
    one = FuseNet(ModelConfig(lowres=16, blend_side=48)).eval()
    same = torch.cat([frames[:, :1]] * 3, dim=1)  # one exposure three times (so nothing to reconstruct)
    assert torch.allclose(one(same, torch.ones(1, 3))[0], frames[:, 0], atol=2e-3)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(3)
    model = FuseNet(ModelConfig(width=8, depth=2)).eval()
    weights_path, json_path = save_model(tmp_path / "m", model, {"note": "test"})
    loaded, sidecar = load_model(tmp_path / "m.safetensors")
    frames, ratios = _stack(1, 3, 4)
    assert torch.equal(loaded(frames, ratios)[0], model(frames, ratios)[0])
    assert (
        sidecar["architecture"]["width"] == 8 and sidecar["supports"]["channels"] == "any" and sidecar["note"] == "test"
    )
    assert weights_path.read_bytes()[8:9] == b"{"  # safetensors: a length, then a JSON header


def test_bad_model_files(tmp_path):
    save_model(tmp_path / "m", FuseNet(ModelConfig(width=8, depth=2)))
    with pytest.raises(FuseError, match=r"nothere\.safetensors: model file not found"):
        load_model(tmp_path / "nothere")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.json").write_text((tmp_path / "m.json").read_text())
    with pytest.raises(FuseError, match=r"cut\.safetensors: truncated or not a safetensors file"):
        load_model(tmp_path / "cut")
    (tmp_path / "foreign.safetensors").write_bytes(data)
    (tmp_path / "foreign.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(FuseError, match="not a fusecli model sidecar"):
        load_model(tmp_path / "foreign")
    sidecar = json.loads((tmp_path / "m.json").read_text())
    sidecar["architecture"]["width"] = 16
    (tmp_path / "wide.safetensors").write_bytes(data)
    (tmp_path / "wide.json").write_text(json.dumps(sidecar))
    with pytest.raises(FuseError, match="weights do not match the architecture"):
        load_model(tmp_path / "wide")


def test_the_cuda_widening_gives_the_cpu_one_bit_for_bit():
    """upsample_rows widens rows with 2-D bilinear interpolation on CUDA (height unchanged) and 1-D linear
    on the CPU: the same values."""
    tall = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    one = F.interpolate(tall.reshape(3, 37, 53), size=301, mode="linear", align_corners=False).view(1, 3, 37, 301)
    two = F.interpolate(tall, size=(37, 301), mode="bilinear", align_corners=False)
    assert torch.equal(one, two)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_upsample_rows_on_cuda_equals_the_cpu():
    coef = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(1))
    on_cpu = upsample_rows(coef, slice(5, 150), 200, 300)
    assert torch.allclose(upsample_rows(coef.cuda(), slice(5, 150), 200, 300).cpu(), on_cpu, atol=1e-6)


def test_float_rounding_does_not_decide_the_picture():
    """The bundled model on a smooth procedural bracket in float32 and in float64: the same picture
    (with exposure fusion's epsilon at 1e-12, rounding noise in smooth patches moved pixels by 0.14)."""
    rng = np.random.default_rng(0)
    scene = procedural_scene(192, 256, rng)
    scene *= np.float32(0.5 / np.median(scene))
    frames = torch.from_numpy(np.stack([np.clip(scene * r, 0, 1) for r in (1, 0.25, 0.0625)]).transpose(0, 3, 1, 2))
    ratios = torch.tensor([[1, 0.25, 0.0625]])
    model = load_model()[0]
    with torch.inference_mode():
        single = model(frames[None], ratios)[0]
        double = model.double()(frames[None].double(), ratios.double())[0]
    assert (single - double).abs().max().item() < 5e-3  # 1e-12: 0.14; 1e-5: 9e-4


def test_the_default_model_is_found_from_a_source_checkout(monkeypatch):
    """Run from a checkout on PYTHONPATH, not installed, there is no fusecli.models package (pyproject
    maps models/ to it at install): the models/ folder beside the package is used."""
    import fusecli.model

    def not_installed(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(fusecli.model.resources, "files", not_installed)
    path = default_model_path()
    assert path == ROOT / "models" / "default.safetensors" and path.exists()


def test_the_bundled_default_model():
    path = default_model_path()
    if not path.exists():
        pytest.skip("models/default.safetensors has not been trained yet")
    assert path.stat().st_size < 5_000_000
    model, sidecar = load_model()
    assert sidecar["supports"]["channels"] == "any"
    for c in (4, 3):
        fused, weights = model(*_stack(1, 3, c))
        assert torch.isfinite(fused).all() and torch.allclose(weights.sum(1), torch.ones_like(weights[:, 0]), atol=1e-5)
