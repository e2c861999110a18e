"""PSNR, SSIM and MEF-SSIM against known values and a literal per-patch MEF-SSIM."""

import math

import numpy as np
import pytest
import torch

from fusecli.metrics import PSNR_CAP_DB, MefSsim, mef_ssim, psnr, ssim


def test_psnr_known_values():
    y = torch.full((2, 3, 8, 8), 0.5)
    assert psnr(y, y + 0.1).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(y, y).item() == PSNR_CAP_DB
    # per image, then the mean: 20 dB and 40 dB -> 30 dB
    y_star = y.clone()
    y_star[0] += 0.1
    y_star[1] += 0.01
    assert psnr(y, y_star).item() == pytest.approx(30.0, abs=1e-3)


def test_ssim_of_constant_images_by_hand():
    # sigma = 0 everywhere: SSIM reduces to the luminance term (2 mx my + C1) / (mx^2 + my^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    a = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64)  # float64: no E[x^2] - mu^2 rounding
    value = ssim(a, a + 0.1)
    # 2e-6: pytorch-msssim builds its Gaussian window in float32, so it sums to 1 only to ~1e-7
    assert value.item() == pytest.approx(expected, abs=2e-6)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, 1 - x).item() < 0.0  # inverted structure
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def _mef_ssim_literal(seq: np.ndarray, fused: np.ndarray) -> float:
    """One scale of MEF-SSIM written out patch by patch from the paper's definitions.

    seq (K, H, W) and fused (H, W) on the [0, 255] scale. For each 11x11 patch: x_k - mu_k is the
    patch's signal, c_k its norm (+0.001); the consistency R of the signals sets the exponent
    p = tan(pi/2 R) (at most 10) of the weights w_k = (c_k / 11)^p; the desired patch is the
    weighted sum of unit signals, rescaled to the largest c_k; the score is the SSIM structure term
    between it and the fused patch with an 11x11 Gaussian window (sigma 1.5), C = (0.03 * 255)^2.
    """
    eps = np.finfo(np.float64).eps
    k, h, w = seq.shape
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g)
    win /= win.sum()
    c = (0.03 * 255) ** 2
    q = []
    for i in range(h - 10):
        for j in range(w - 10):
            patches = seq[:, i : i + 11, j : j + 11].reshape(k, -1)
            centred = patches - patches.mean(axis=1, keepdims=True)
            norms = np.linalg.norm(centred, axis=1)
            strength = norms + 0.001
            total = patches.sum(axis=0)
            r = (np.linalg.norm(total - total.mean()) + eps) / (norms.sum() + eps)
            r = min(max(r, eps), 1 - eps)
            p = min(math.tan(math.pi / 2 * r), 10.0)
            wk = (strength / 11) ** p + eps
            wk /= wk.sum()
            desired = (wk[:, None] * centred / strength[:, None]).sum(axis=0)
            if np.linalg.norm(desired) > 0:
                desired = desired / np.linalg.norm(desired) * strength.max()
            f = fused[i : i + 11, j : j + 11].ravel()
            wv = win.ravel()
            m1, m2 = (wv * desired).sum(), (wv * f).sum()
            s1 = (wv * (desired - m1) ** 2).sum()
            s2 = (wv * (f - m2) ** 2).sum()
            s12 = (wv * (desired - m1) * (f - m2)).sum()
            q.append((2 * s12 + c) / (s1 + s2 + c))
    return float(np.mean(q))


def test_mef_ssim_matches_the_per_patch_definition():
    g = torch.Generator().manual_seed(1)
    scene = torch.rand(1, 1, 1, 26, 24, generator=g) * 2.0
    frames = (scene * torch.tensor([1.0, 0.4, 0.1]).view(1, 3, 1, 1, 1)).clamp(0, 1)
    fused = (frames.mean(dim=1) + 0.02 * torch.rand(1, 1, 26, 24, generator=g)).clamp(0, 1)
    ours = mef_ssim(frames.double(), fused.double(), levels=1).item()
    literal = _mef_ssim_literal(frames[0, :, 0].double().numpy() * 255, fused[0, 0].double().numpy() * 255)
    assert ours == pytest.approx(literal, abs=1e-9)
    assert 0.3 < ours < 1.0


def test_mef_ssim_keeps_its_precision_in_float32_on_a_ten_frame_stack():
    # a bright flat scene (a sky) with one textured square, ten exposures 1/3 EV apart: where the
    # patches are flat the desired patch's weights are large (1 / (strength + 0.001)), and the
    # pairwise second moments of 0..255 values cancelled in float32 (this stack scored 0.9632 against
    # float64's 0.9658 before the frames were centred; a real 10-frame stack 0.734 against 0.771)
    g = torch.Generator().manual_seed(5)
    scene = torch.full((1, 1, 3, 96, 96), 0.8)
    scene[..., 30:60, 30:60] += 0.3 * torch.rand(1, 1, 3, 30, 30, generator=g)
    scene += 0.002 * torch.rand(1, 1, 3, 96, 96, generator=g)
    gains = torch.tensor([2.0 ** (-i / 3) for i in range(10)]).view(1, 10, 1, 1, 1)
    frames = (scene * gains * 1.2).clamp(0, 1)
    fused = frames.mean(dim=1)
    f32 = MefSsim(frames.float()).score(fused.float())
    f64 = MefSsim(frames.double()).score(fused.double())
    assert abs(f32 - f64) < 1e-4 and 0.9 < f64 < 1.0


def test_mef_ssim_of_a_stack_fused_with_itself_is_one():
    # K copies of one image fused into that image: every patch's desired structure is its own.
    x = torch.rand(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    frames = x.expand(2, 3, 3, 64, 64)
    assert mef_ssim(frames, x[:, 0]).item() == pytest.approx(1.0, abs=1e-4)


def test_mef_ssim_prefers_a_fusion_that_keeps_the_structure_of_every_exposure():
    # A scene whose right half is 8x brighter: the 1/1 frame clips there, the 1/8 frame shows it
    # but renders the left half with 1/8 of its contrast. Taking each half from the frame that
    # shows it best (keeping the step between the halves) is what the index rewards.
    g = torch.Generator().manual_seed(3)
    texture = torch.rand(1, 1, 128, 128, generator=g, dtype=torch.float64) * 0.3 + 0.1
    left = torch.zeros(1, 1, 128, 128, dtype=torch.float64)
    left[..., :64] = 1.0
    scene = texture * left + 8 * texture * (1 - left)
    bright, dark = scene.clamp(0, 1), (scene / 8).clamp(0, 1)
    frames = torch.stack([bright, dark], dim=1)
    fused = torch.where(left.bool(), bright, 0.5 + dark)
    best = mef_ssim(frames, fused).item()
    assert best > 0.95
    for single in (bright, dark, (bright + dark) / 2):
        assert mef_ssim(frames, single).item() < best - 0.05


def test_mef_ssim_checks_sizes():
    with pytest.raises(ValueError, match="44x44"):
        mef_ssim(torch.zeros(1, 2, 1, 40, 40), torch.zeros(1, 1, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, K, C, H, W\)"):
        mef_ssim(torch.zeros(1, 1, 40, 40), torch.zeros(1, 1, 40, 40))


def test_single_scale_mef_ssim_by_hand():
    """One 11x11 window (the image size): frame 1 a checkerboard, frame 2 flat. The desired patch is
    frame 1's structure, so frame 1 itself scores 1; a flat image scores C / (sigma^2 + C) with
    sigma^2 frame 1's Gaussian-weighted variance and C = (0.03 x 255)^2."""
    from fusecli.metrics import MefSsim

    board = (np.indices((11, 11)).sum(axis=0) % 2).astype(np.float64)  # 0/1 checkerboard
    frames = torch.from_numpy(np.stack([board, np.full((11, 11), 0.5)]))[None, :, None]
    assert mef_ssim(frames, frames[:, 0], levels=1).item() == pytest.approx(1.0, abs=1e-9)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g = np.outer(g, g) / np.outer(g, g).sum()
    x = board * 255
    sigma2 = (g * x * x).sum() - (g * x).sum() ** 2
    c = (0.03 * 255) ** 2
    flat = torch.full((1, 1, 11, 11), 0.5, dtype=torch.float64)
    # (to 1e-5: the definition adds 0.001 to every patch strength, so the flat frame counts a little)
    assert mef_ssim(frames, flat, levels=1).item() == pytest.approx(c / (sigma2 + c), rel=1e-5)
    assert MefSsim(frames).score(flat) == pytest.approx(c / (sigma2 + c), rel=1e-5)  # the cached form


def test_global_contrast_is_the_spread_of_the_pictures_brightness():
    from fusecli.metrics import global_contrast

    half = torch.zeros(1, 3, 512, 512)
    half[..., 256:] = 1.0  # black and white halves: luma 0 and 1 (the weights sum to 0.9999)
    assert float(global_contrast(half)[0]) == pytest.approx(0.49995, abs=1e-5)
    assert float(global_contrast(torch.full((1, 1, 300, 200), 0.4))[0]) == pytest.approx(0.0, abs=1e-7)
    fine = torch.zeros(1, 1, 512, 512)
    fine[..., ::2] = 1.0  # texture finer than 256 px averages out: no tonal layout
    assert float(global_contrast(fine)[0]) == pytest.approx(0.0, abs=1e-6)
