"""The fusion's image operations: pyramids, the multi-scale blend, exposure fusion's measures."""

import numpy as np
import pytest
import torch

from fusecli.blend import (
    box_mean,
    collapse,
    laplacian_pyramid,
    pyramid_blend,
    pyramid_levels,
    quality_measures,
    reconstruct_highlights,
    srgb_decode,
    srgb_encode,
    structure_blend,
)
from fusecli.develop import linear_to_srgb


def test_a_laplacian_pyramid_collapses_to_its_image_exactly():
    x = torch.rand(2, 3, 37, 51, dtype=torch.float64)
    bands = laplacian_pyramid(x, pyramid_levels(37, 51))
    assert [b.shape[-2:] for b in bands] == [(37, 51), (19, 26), (10, 13), (5, 7)]
    assert torch.allclose(collapse(bands), x, atol=1e-12)


def test_constant_weights_blend_to_the_weighted_sum():
    frames = torch.rand(1, 3, 2, 40, 50, dtype=torch.float64)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64).view(1, 3, 1, 1, 1).expand(1, 3, 1, 40, 50)
    assert torch.allclose(pyramid_blend(frames, w), (frames * w).sum(1), atol=1e-12)


def test_a_weight_step_across_a_flat_region_gives_no_brightness_step():
    """Two flat frames, 0.2 and 0.6, weights switching from one to the other at a column: a single
    weighted sum makes a 0.4 step there (a seam); across the pyramid the change is spread over the
    coarse bands it belongs to, no column-to-column change anywhere near the step's."""
    h, w = 64, 256
    frames = torch.stack([torch.full((1, h, w), 0.2), torch.full((1, h, w), 0.6)])[None].double()
    weights = torch.zeros(1, 2, 1, h, w, dtype=torch.float64)
    weights[:, 0, :, :, : w // 2] = 1.0
    weights[:, 1, :, :, w // 2 :] = 1.0
    single = (frames * weights).sum(1)[0, 0, h // 2]
    blended = pyramid_blend(frames, weights)[0, 0, h // 2]
    assert (single[1:] - single[:-1]).abs().max() == pytest.approx(0.4)
    steps = (blended[1:] - blended[:-1]).abs()
    assert steps.max() < 0.4 / 8  # measured: 0.026
    assert blended[2] == pytest.approx(0.2, abs=0.02) and blended[-3] == pytest.approx(0.6, abs=0.02)
    assert torch.all(blended[1:] >= blended[:-1] - 1e-9)  # monotone: no halo, no overshoot


def test_an_edge_inside_one_frames_region_stays_sharp():
    h, w = 64, 128
    a = torch.full((1, h, w), 0.2, dtype=torch.float64)
    a[..., 40:] = 0.8  # an edge at column 40, where frame 0 has all the weight
    frames = torch.stack([a, torch.full((1, h, w), 0.5, dtype=torch.float64)])[None]
    weights = torch.zeros(1, 2, 1, h, w, dtype=torch.float64)
    weights[:, 0, :, :, :80] = 1.0
    weights[:, 1, :, :, 80:] = 1.0
    row = pyramid_blend(frames, weights)[0, 0, h // 2]
    assert row[40] - row[39] > 0.45  # most of the 0.6 edge in one pixel


def test_box_mean_by_hand():
    x = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    x[0, 0, 1, 2] = 9.0
    y = box_mean(x, 1)
    assert y[0, 0, 1, 1] == pytest.approx(1.0) and y[0, 0, 2, 3] == pytest.approx(1.0)
    assert y[0, 0, 1, 0] == 0.0
    x = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = 9.0  # a corner: edges replicated, its window holds it 2 x 2 times
    assert box_mean(x, 1)[0, 0, 0, 0] == pytest.approx(4.0)


def test_structure_blend_of_identical_frames_is_that_frame():
    x = torch.rand(1, 1, 3, 40, 50, dtype=torch.float64).expand(1, 3, 3, 40, 50).contiguous()
    w = torch.softmax(torch.randn(1, 3, 1, 40, 50, dtype=torch.float64), dim=1)
    assert torch.allclose(structure_blend(x, w, headroom=0.0), x[:, 0], atol=1e-12)
    # with the headroom: the same wherever the detail fits (0.5 +- 0.1 is 0.06 std, 0.12 from the middle)
    x = 0.4 + 0.2 * x
    assert torch.allclose(structure_blend(x, w), x[:, 0], atol=1e-12)


def _checker(h: int, w: int, amplitude: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return 0.5 + amplitude * (((yy // 2 + xx // 2) % 2) * 2 - 1).double()


def test_structure_blend_keeps_the_strongest_contrast():
    """A clipped (flat white) frame and a textured one (0.5 +- 0.1), weighted half and half: the pyramid
    blend halves the texture (std 0.05); the structural blend keeps it whole (std 0.1) on the same
    tone (mean 0.75)."""
    h, w = 40, 56
    frames = torch.stack([torch.ones(3, h, w, dtype=torch.float64), _checker(h, w, 0.1).expand(3, h, w)])[None]
    weights = torch.full((1, 2, 1, h, w), 0.5, dtype=torch.float64)
    inner = (0, 0, slice(10, 30), slice(10, 46))
    plain, kept = pyramid_blend(frames, weights)[inner], structure_blend(frames, weights)[inner]
    assert plain.std() == pytest.approx(0.05, rel=0.02) and kept.std() == pytest.approx(0.1, rel=0.02)
    assert plain.mean() == pytest.approx(0.75, abs=1e-3) and kept.mean() == pytest.approx(0.75, abs=1e-3)


def test_structure_blend_of_two_textures_takes_the_stronger():
    """Two frames with the same texture at 0.02 and 0.08: the result carries it at 0.08 whatever the
    weights say, as MEF-SSIM's desired patch does."""
    h, w = 40, 56
    frames = torch.stack([_checker(h, w, 0.02).expand(3, h, w), _checker(h, w, 0.08).expand(3, h, w)])[None]
    weights = torch.tensor([0.9, 0.1], dtype=torch.float64).view(1, 2, 1, 1, 1).expand(1, 2, 1, h, w)
    kept = structure_blend(frames, weights)[0, 0, 10:30, 10:46]
    assert kept.std() == pytest.approx(0.08, rel=0.02) and kept.mean() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("flat, tone", [(1.0, 0.9), (0.0, 0.1)])
def test_structure_blend_gives_detail_headroom(flat, tone):
    """All the weight on a clipped frame (flat white, or flat black) and none on a frame holding a
    texture of std 0.05: the texture is kept, and the tone moves in from white (or black) by
    HEADROOM = 2 of its standard deviations, 0.1, so none of it clips; without headroom, half of it
    would fall outside [0, 1]."""
    h, w = 40, 56
    frames = torch.stack([torch.full((3, h, w), flat, dtype=torch.float64), _checker(h, w, 0.05).expand(3, h, w)])
    weights = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 2, 1, 1, 1).expand(1, 2, 1, h, w)
    kept = structure_blend(frames[None], weights)[0, :, 10:30, 10:46]
    assert kept.mean() == pytest.approx(tone, abs=1e-3) and kept.std() == pytest.approx(0.05, rel=0.02)
    assert 0.0 < kept.min() and kept.max() < 1.0
    bare = structure_blend(frames[None], weights, headroom=0.0)[0, :, 10:30, 10:46]
    assert bare.mean() == pytest.approx(flat, abs=1e-3)


def test_quality_measures_by_hand():
    grey = torch.full((1, 1, 3, 5, 5), 0.5)
    grey[..., 2, 2] = 0.75  # one brighter grey pixel: contrast |4 x 0.25 - 0| = 1 there
    q = quality_measures(grey)  # logs of each measure + 1e-5 (blend._EPS)
    assert q[0, 0, 0, 2, 2].exp() == pytest.approx(1.0 + 1e-5, rel=1e-6)
    assert q[0, 0, 0, 2, 3].exp() == pytest.approx(0.25 + 1e-5, rel=1e-6)  # a neighbour: |0.25|
    assert q[0, 0, 1].exp().max() == pytest.approx(1e-5, rel=1e-4)  # grey has no saturation
    # well-exposedness: sum over channels of -(x - 0.5)^2 / (2 0.2^2): 0 at mid-grey, -0.9375 at 0.75
    assert q[0, 0, 2, 0, 0] == pytest.approx(0.0) and q[0, 0, 2, 2, 2] == pytest.approx(-3 * 0.0625 / 0.08)


def test_srgb_curves_match_the_colour_module():
    x = torch.linspace(0, 1, 1001)
    assert np.allclose(srgb_encode(x).numpy(), linear_to_srgb(x.numpy()), atol=1e-6)
    assert torch.allclose(srgb_decode(srgb_encode(x)), x, atol=1e-6)


def test_clipped_pixels_take_the_darker_frames_colour():
    """A pixel whose green clipped in the 1/1 frame, held by the 1/4 frame as (0.1, 0.4, 0.05): at
    the 1/1 exposure it would be (0.4, 1.6, 0.2), more than the frame holds, so it becomes the
    darker frame's colour as bright as the frame can hold it (largest channel 1): (0.25, 1, 0.125),
    red/green 0.25 as in the darker frame -- not the clipped frame's 0.3 / 1 (a magenta cast)."""
    frames = torch.tensor([[0.3, 1.0, 0.2], [0.1, 0.4, 0.05]]).view(1, 2, 3, 1, 1)
    out = reconstruct_highlights(frames, torch.tensor([[1.0, 0.25]]))
    assert out[0, 0, :, 0, 0].tolist() == pytest.approx([0.25, 1.0, 0.125])
    assert torch.equal(out[0, 1], frames[0, 1])  # the darkest frame is as it was
    unclipped = torch.tensor([[0.3, 0.6, 0.2], [0.075, 0.15, 0.05]]).view(1, 2, 3, 1, 1)
    assert torch.equal(reconstruct_highlights(unclipped, torch.tensor([[1.0, 0.25]])), unclipped)
