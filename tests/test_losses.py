"""The seed's loss terms: hand-computed values, literal transcriptions of the seed's code, gradients."""

import math

import pytest
import torch
import torch.nn as nn

from fusecli.errors import FuseError
from fusecli.losses import (
    FusionLoss,
    LossConfig,
    black_reg,
    dilate_blur,
    grad_sign,
    gradient_l1,
    high_smooth,
    l1,
    luma_grad,
)

# A 1x1x2x3 image and label whose terms are worked out by hand below.
Y = torch.tensor([[[[0.1, 0.5, 0.9], [0.2, 0.4, 0.6]]]], dtype=torch.float64)
Y_STAR = torch.tensor([[[[0.0, 0.5, 1.0], [0.4, 0.4, 0.3]]]], dtype=torch.float64)


def test_l1_by_hand():
    # |y - y*| = 0.1, 0, 0.1, 0.2, 0, 0.3 -> 0.7 / 6
    assert l1(Y, Y_STAR).item() == pytest.approx(0.7 / 6)


def test_gradient_l1_by_hand():
    # dx y = [.4 .4; .2 .2], dx y* = [.5 .5; 0 -.1] -> |diff| sums to .7 over 4
    # dy y = [.1 -.1 -.3],   dy y* = [.4 -.1 -.7]   -> |diff| sums to .7 over 3
    assert gradient_l1(Y, Y_STAR).item() == pytest.approx(0.7 / 4 + 0.7 / 3)


def test_grad_sign_by_hand():
    # only dx at row 1, col 1 flips: 0.2 * -0.1 -> ReLU(0.02) = 0.02, mean over 4; dy never flips
    assert grad_sign(Y, Y_STAR).item() == pytest.approx(0.02 / 4)


def test_grad_sign_zero_when_edges_agree_positive_when_they_flip():
    label = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert grad_sign(0.5 * label, label).item() == 0.0
    assert grad_sign(1.0 - label, label).item() > 0.01


def test_high_smooth_by_hand():
    # h_th = 0.9: only the dx pair (0.5, 1.0) in row 0 and the dy pair (1.0, 0.3) in column 2 count
    # dx: |0.1 - 0.5| ... masked |diff| = 0.1 over 4 positions; dy: masked |diff| = 0.4 over 3
    assert high_smooth(Y, Y_STAR, h_th=0.9).item() == pytest.approx(0.1 / 4 + 0.4 / 3)


def test_high_smooth_counts_only_highlight_positions():
    g = torch.Generator().manual_seed(1)
    label = 0.5 * torch.rand(1, 4, 12, 12, generator=g)  # no label pixel reaches 0.8
    y = torch.rand(1, 4, 12, 12, generator=g)
    assert high_smooth(y, label, h_th=0.8).item() == 0.0
    label[..., 5, 5] = 0.95  # one highlight pixel: its 4 neighbouring differences count
    value = high_smooth(y, label, h_th=0.8)
    dx = (y[..., :, 1:] - y[..., :, :-1]) - (label[..., :, 1:] - label[..., :, :-1])
    dy = (y[..., 1:, :] - y[..., :-1, :]) - (label[..., 1:, :] - label[..., :-1, :])
    expected = (dx[..., 5, 4].abs().sum() + dx[..., 5, 5].abs().sum()) / dx.numel() + (
        dy[..., 4, 5].abs().sum() + dy[..., 5, 5].abs().sum()
    ) / dy.numel()
    assert value.item() == pytest.approx(expected.item())


def test_identical_inputs_give_zero():
    x = torch.rand(2, 4, 20, 24, generator=torch.Generator().manual_seed(2))
    for term in (l1, gradient_l1, grad_sign, high_smooth, luma_grad):
        assert term(x, x).item() == 0.0, term.__name__


def test_luma_grad_by_hand_and_its_window():
    y = torch.zeros(1, 1, 8, 8)  # 8x8: pooling is the identity
    ref = torch.zeros(1, 1, 8, 8)
    ref[..., 0, 0] = 1.0  # x and y differences at (0, 0) are both 1 -> error 2 at one of 7x7 places
    assert luma_grad(y, ref).item() == pytest.approx(2 / 49)
    ref = torch.zeros(1, 1, 8, 8)
    ref[..., 7, 7] = 1.0  # outside the source's [:-1, :-1] window: it never counts
    assert luma_grad(y, ref).item() == 0.0


def _source_luma_grad(prediction, target):
    """The seed's LumaGradLoss, transcribed literally (the reference passed in as ``target``)."""
    prediction = torch.nn.AdaptiveAvgPool2d((8, 8))(prediction)
    target = torch.nn.AdaptiveAvgPool2d((8, 8))(target)
    target = torch.clamp(target, 0.0, 1.0)
    prediction = torch.clamp(prediction, 0.0, 1.0)
    prediction_x_diff = prediction[:, :, :-1, :-1] - prediction[:, :, :-1, 1:]
    prediction_y_diff = prediction[:, :, :-1, :-1] - prediction[:, :, 1:, :-1]
    target_x_diff = target[:, :, :-1, :-1] - target[:, :, :-1, 1:]
    target_y_diff = target[:, :, :-1, :-1] - target[:, :, 1:, :-1]
    error = (target_x_diff - prediction_x_diff) ** 2.0 + (target_y_diff - prediction_y_diff) ** 2.0
    return torch.mean(error)


@pytest.mark.parametrize("shape", [(2, 4, 37, 23), (1, 3, 8, 8), (3, 1, 64, 96)])
def test_luma_grad_matches_the_seed_code(shape):
    g = torch.Generator().manual_seed(3)
    y = torch.rand(*shape, generator=g) * 1.2 - 0.1  # values outside [0, 1] exercise the clamp
    ref = torch.rand(*shape, generator=g)
    assert torch.allclose(luma_grad(y, ref), _source_luma_grad(y, ref), rtol=1e-6, atol=0)


def test_dilate_blur_by_hand():
    mask = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, 0.0]]]])
    # dilate 3x3 -> [1 1 0 0 0]; box mean over in-image pixels -> [2/2, 2/3, 1/3, 0, 0]
    expected = torch.tensor([[[[1.0, 2 / 3, 1 / 3, 0.0, 0.0]]]])
    assert torch.allclose(dilate_blur(mask, 3), expected)
    with pytest.raises(ValueError, match="odd"):
        dilate_blur(mask, 4)


def test_black_reg_by_hand():
    # 2x3 image, K = 2, C = 1, kernel 1 (no dilate-blur) so every number is visible:
    # label rows [0 0 .6]: the left-reflected column difference gives tv = [0 0 .6] -> flat [1 1 .4]
    # 1/1 frame has one bright pixel -> dark = [1 1 1; 1 0 1]; low = [1 1 .4; 1 0 .4], sum 3.8
    # sum(w1 * low) = .1 + .2 + .12 + .4 + 0 + .24 = 1.06
    frames = torch.zeros(1, 2, 1, 2, 3)
    frames[0, 0, 0] = torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.9, 0.1]])
    label = torch.tensor([[[[0.0, 0.0, 0.6], [0.0, 0.0, 0.6]]]])
    w1 = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    weights = torch.stack([1 - w1, w1])[None, :, None]
    assert black_reg(weights, frames, label, threshold=0.4, kernel=1).item() == pytest.approx(1.06 / 3.8)


def _source_black_reg(weight, target, input_refs):
    """The seed's BlackRegLoss, literally, with .cuda() removed and the 5x5 dilate-blur defined."""

    def tf_high_light_dilate_blur(mask, k):
        dilated = nn.MaxPool2d(k, stride=1, padding=k // 2)(mask)
        return nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)(dilated)

    input_1 = input_refs[:, -12:-8, :, :]
    raw_grey, _ = torch.max(input_1, dim=1, keepdim=True)
    low_mask = torch.where(raw_grey <= 0.4, torch.ones_like(raw_grey), torch.zeros_like(raw_grey))
    p2d = [0, 0, 1, 0]
    tv_mask_h = nn.ReflectionPad2d(p2d)(target)
    tv_mask_h = tv_mask_h[:, :, 1:, :] - tv_mask_h[:, :, :-1, :]
    p2d = [1, 0, 0, 0]
    tv_mask_w = nn.ReflectionPad2d(p2d)(target)
    tv_mask_w = tv_mask_w[:, :, :, 1:] - tv_mask_w[:, :, :, :-1]
    tv_mask = torch.max(torch.abs(tv_mask_h), torch.abs(tv_mask_w))
    tv_mask, _ = torch.max(tv_mask, dim=1, keepdim=True)
    tv_mask = 1.0 - tv_mask
    low_mask = tf_high_light_dilate_blur(low_mask * tv_mask, 5)
    if weight.shape[1] == 3 or weight.shape[1] == 4:
        return torch.sum(weight[:, 1:3, :, :] * low_mask) / (torch.sum(low_mask) * (2.0))
    elif weight.shape[1] == 12 or weight.shape[1] == 13:
        return torch.sum(weight[:, 4 : 4 * 3, :, :] * low_mask) / (torch.sum(low_mask) * (2.0 * 4))
    raise ValueError("Unsupport weight type")


def _random_stack(b=2, k=3, c=4, *, h=24, w=20, seed=4):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 1, c, h, w, generator=g)
    ratios = torch.tensor([1.0, 0.25, 0.0625][:k]).view(1, k, 1, 1, 1)
    frames = (base * 1.6 * ratios).clamp(0, 1)
    label = torch.rand(b, c, h, w, generator=g) * 0.3 + 0.2
    return frames, label, g


@pytest.mark.parametrize("cw", [1, 4])
def test_black_reg_matches_the_seed_code(cw):
    frames, label, g = _random_stack()
    weights = torch.softmax(torch.randn(2, 3, cw, 24, 20, generator=g), dim=1)
    ours = black_reg(weights, frames, label)
    source = _source_black_reg(weights.flatten(1, 2), label, frames.flatten(1, 2))
    assert ours.item() > 0
    assert torch.allclose(ours, source, rtol=1e-5, atol=0)


def test_black_reg_is_zero_not_nan_on_a_bright_stack():
    frames, label, g = _random_stack()
    frames = frames * 0.0 + 0.9  # no dark pixel in the 1/1 frame: sum(low) = 0
    weights = torch.softmax(torch.randn(2, 3, 1, 24, 20, generator=g), dim=1)
    assert black_reg(weights, frames, label).item() == 0.0


def test_black_reg_pushes_gradients_only_into_the_darker_frames():
    frames, label, g = _random_stack()
    logits = torch.randn(2, 3, 4, 24, 20, generator=g, requires_grad=True)
    weights = torch.softmax(logits, dim=1)
    weights.retain_grad()
    black_reg(weights, frames, label).backward()
    assert weights.grad[:, 0].abs().max().item() == 0.0
    assert weights.grad[:, 1:].max().item() > 0.0
    assert (weights.grad[:, 1:] >= 0).all()  # more weight on darker frames never lowers the loss


def test_black_reg_any_k():
    g = torch.Generator().manual_seed(5)
    frames = torch.rand(1, 5, 3, 16, 16, generator=g) * 0.3
    label = torch.full((1, 3, 16, 16), 0.2)  # flat label: low = dark everywhere = 1
    weights = torch.softmax(torch.randn(1, 5, 1, 16, 16, generator=g), dim=1)
    # flat label and an all-dark 1/1 frame: low is 1 everywhere, loss = mean weight of frames 1..4
    expected = weights[:, 1:].sum() / (16 * 16 * 4)
    assert black_reg(weights, frames, label).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(6)
    y = torch.rand(1, 2, 9, 10, dtype=torch.float64, generator=g, requires_grad=True)
    label = torch.rand(1, 2, 9, 10, dtype=torch.float64, generator=g)
    for fn in (l1, gradient_l1, grad_sign, lambda a, b: high_smooth(a, b, 0.6), luma_grad):
        assert torch.autograd.gradcheck(lambda a, fn=fn: fn(a, label), (y,))
    frames = torch.rand(1, 3, 2, 9, 10, dtype=torch.float64, generator=g) * 0.5
    logits = torch.randn(1, 3, 2, 9, 10, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: black_reg(torch.softmax(z, 1), frames, label), (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_finite_and_keeps_the_dtype(dtype):
    frames, label, g = _random_stack(b=2, h=64, w=64)
    weights = torch.softmax(torch.randn(2, 3, 4, 64, 64, generator=g), dim=1)
    y = (weights * frames).sum(1)
    total32, terms32 = FusionLoss()(y, label, frames, weights)
    total, terms = FusionLoss()(y.to(dtype), label.to(dtype), frames.to(dtype), weights.to(dtype))
    assert total.dtype == dtype and total.ndim == 0 and torch.isfinite(total)
    for name, value in terms.items():
        assert value.dtype == dtype and torch.isfinite(value), name
    assert total.float().item() == pytest.approx(total32.item(), rel=0.05)


def test_autocast_bfloat16_backward_on_cpu():
    frames, label, g = _random_stack(b=1, h=32, w=32)
    logits = torch.randn(1, 3, 1, 32, 32, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = torch.softmax(logits, dim=1)
        y = (weights * frames).sum(1)
        total, _ = FusionLoss()(y, label, frames, weights)
    total.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_matches_cpu():
    frames, label, g = _random_stack()
    weights = torch.softmax(torch.randn(2, 3, 4, 24, 20, generator=g), dim=1)
    y = (weights * frames).sum(1)
    cpu_total, _ = FusionLoss()(y, label, frames, weights)
    cuda_total, terms = FusionLoss()(y.cuda(), label.cuda(), frames.cuda(), weights.cuda())
    assert cuda_total.device.type == "cuda"
    assert cuda_total.item() == pytest.approx(cpu_total.item(), rel=1e-4)


def test_fusion_loss_is_the_weighted_sum_of_its_terms():
    frames, label, g = _random_stack()
    weights = torch.softmax(torch.randn(2, 3, 1, 24, 20, generator=g), dim=1)
    y = (weights * frames).sum(1)
    cfg = LossConfig(gamma=3.0, eta=2.0, h_th=0.3, lambda_luma=5.0, lambda_black=0.5)
    total, t = FusionLoss(cfg)(y, label, frames, weights)
    expected = (
        t["l1"]
        + t["gradient_l1"]
        + 3.0 * t["grad_sign"]
        + 2.0 * t["high_smooth"]
        + 5.0 * t["luma_grad"]
        + 0.5 * t["black_reg"]
    )
    assert total.item() == pytest.approx(expected.item())
    # the combined loss shares work between terms: each must still equal its own function
    assert t["l1"].item() == pytest.approx(l1(y, label).item())
    assert t["gradient_l1"].item() == pytest.approx(gradient_l1(y, label).item())
    assert t["grad_sign"].item() == pytest.approx(grad_sign(y, label).item())
    assert t["high_smooth"].item() == pytest.approx(high_smooth(y, label, 0.3).item())
    assert t["black_reg"].item() == pytest.approx(black_reg(weights, frames, label).item())
    assert t["luma_grad"].item() == pytest.approx(luma_grad(y, frames[:, 0]).item())
    _, t_label = FusionLoss(LossConfig(luma_reference="label"))(y, label, frames, weights)
    assert t_label["luma_grad"].item() == pytest.approx(luma_grad(y, label).item())


def test_config_from_toml(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("[loss]\ngamma = 2.5\nluma_reference = 'label'\n")
    cfg = LossConfig.from_toml(path)
    assert cfg.gamma == 2.5 and cfg.luma_reference == "label" and cfg.eta == LossConfig().eta
    path.write_text("[loss]\ngama = 2.5\n")
    with pytest.raises(FuseError, match="unknown loss setting.*gama"):
        LossConfig.from_toml(path)
    with pytest.raises(FuseError, match="black_kernel"):
        LossConfig(black_kernel=4)


def test_shape_errors_name_the_expected_shapes():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        l1(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="same shape"):
        gradient_l1(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, K, 1, H, W\) or \(B, K, C, H, W\)"):
        black_reg(torch.zeros(1, 3, 2, 4, 4), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="K >= 2"):
        black_reg(torch.zeros(1, 1, 1, 4, 4), torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 4, 4, 4))


def test_every_term_is_a_scalar_on_the_input_dtype():
    y = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    for fn in (l1, gradient_l1, grad_sign, high_smooth, luma_grad):
        out = fn(y, y.flip(-1))
        assert out.ndim == 0 and out.dtype == torch.float64 and not math.isnan(out.item())


def test_black_reg_against_a_reference_in_the_middle_by_hand():
    """A -2/0/+2 bracket whose reference is the middle frame: only the darker frame after it is
    penalised, in the reference's dark flat region (everywhere here: a flat, dark reference)."""
    frames = torch.full((1, 3, 1, 8, 8), 0.1)
    label = torch.full((1, 1, 8, 8), 0.3)
    weights = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 8, 8)
    # low = 1 everywhere: the darker frame (index 2) has weight 0.2 -> loss 0.2; the seed's reference
    # (index 0) penalises both later frames: (0.3 + 0.2) / 2
    assert float(black_reg(weights, frames, label, reference=torch.tensor([1]))) == pytest.approx(0.2)
    assert float(black_reg(weights, frames, label)) == pytest.approx(0.25)
    assert float(black_reg(weights, frames, label, reference=torch.tensor([2]))) == 0.0  # nothing darker
