"""FuseNet: shapes, normalisation, equivariance, the guided filter, model files."""

import json

import pytest
import torch
import torch.nn.functional as F

from fusecli.errors import FuseError
from fusecli.model import FuseNet, ModelConfig, default_model_path, fast_guided_filter, load_model, save_model


def _stack(b, k, c, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    scene = torch.rand(b, 1, c, h, w, generator=g) * 3
    ratios = torch.tensor([[4.0**-i for i in range(k)]] * b)
    return (scene * ratios[:, :, None, None, None]).clamp(0, 1), ratios


@pytest.mark.parametrize("k, c", [(2, 1), (3, 3), (3, 4), (5, 4)])
def test_shapes_and_normalised_weights(k, c):
    model = FuseNet().eval()
    frames, ratios = _stack(2, k, c)
    fused, weights = model(frames, ratios)
    assert fused.shape == (2, c, 40, 56) and weights.shape == (2, k, 1, 40, 56)
    assert torch.all(weights >= 0) and torch.allclose(weights.sum(1), torch.ones(2, 1, 40, 56), atol=1e-5)
    assert torch.allclose(fused, (weights * frames).sum(1))


@pytest.mark.parametrize("c", [1, 3, 4])
def test_per_channel_weights_for_any_channel_count(c):
    model = FuseNet(ModelConfig(weight_mode="channel")).eval()
    frames, ratios = _stack(1, 3, c)
    fused, weights = model(frames, ratios)
    assert weights.shape == (1, 3, c, 40, 56) and torch.allclose(weights.sum(1), torch.ones(1, c, 40, 56), atol=1e-5)
    assert torch.allclose(fused, (weights * frames).sum(1), atol=1e-6)


def test_per_channel_weights_can_differ_between_channels():
    torch.manual_seed(0)
    model = FuseNet(ModelConfig(weight_mode="channel")).eval()
    frames, ratios = _stack(1, 3, 4)
    frames[:, 0, 1] = 1.0  # green clipped in the 1/1 frame only
    _, weights = model(frames, ratios)
    assert (weights[0, 0, 1] - weights[0, 0, 0]).abs().max() > 1e-3  # the head sees each channel


def test_equivariant_to_the_order_of_frames_given_with_their_ratios():
    model = FuseNet(ModelConfig(weight_mode="channel")).eval()  # the richer head, equivariant too
    frames, ratios = _stack(1, 4, 4, seed=1)
    perm = torch.tensor([2, 0, 3, 1])
    fused, weights = model(frames, ratios)
    fused_p, weights_p = model(frames[:, perm], ratios[:, perm])
    assert torch.allclose(weights_p, weights[:, perm], atol=1e-6)
    assert torch.allclose(fused_p, fused, atol=1e-6)


def test_large_inputs_are_processed_at_low_resolution():
    model = FuseNet(ModelConfig(lowres=32)).eval()
    seen = []
    model.inp.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    frames, ratios = _stack(1, 3, 4, h=200, w=300)
    model(frames, ratios)
    assert seen == [(20, 30)]  # factor ceil(300 / 32) = 10


def test_guided_filter_keeps_edges_that_bilinear_upsampling_blurs():
    guide_hr = torch.zeros(1, 1, 64, 64)
    guide_hr[..., 29:] = 1.0  # an edge that does not fall on the 4x4 grid
    guide_lr = F.avg_pool2d(guide_hr, 4)
    target_lr = 0.2 + 0.6 * guide_lr  # weights that follow the image
    out = fast_guided_filter(guide_lr, target_lr, guide_hr, r=1, eps=1e-4)
    expected = 0.2 + 0.6 * guide_hr
    bilinear = F.interpolate(target_lr, size=(64, 64), mode="bilinear", align_corners=False)
    # measured: worst error 0.025 against 0.28 for bilinear upsampling of the same low-res weights
    assert (out - expected).abs().max() < 0.05
    assert (bilinear - expected).abs().max() > 5 * (out - expected).abs().max()
    const = fast_guided_filter(guide_lr, torch.full_like(guide_lr, 0.3), guide_hr, r=1, eps=1e-4)
    assert torch.allclose(const, torch.full_like(guide_hr, 0.3), atol=1e-6)


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
