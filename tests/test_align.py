"""Alignment of handheld brackets and deghosting: known synthetic motion, static stacks, frames that
cannot be registered, borders, ghosts, and what the commands report."""

import json
import math

import cv2
import numpy as np
import pytest
from conftest import ROOT
from typer.testing import CliRunner

from fusecli import align, registration
from fusecli.align import align_stack, fill_uncovered, warp_frame
from fusecli.cli import app
from fusecli.deghost import deghost
from fusecli.discover import discover
from fusecli.registration import feature_motion
from fusecli.stack import load_stack, register
from fusecli.synth import SynthConfig, synthesise

runner = CliRunner()


@pytest.fixture(scope="module")
def handheld(tmp_path_factory):
    """Procedural brackets, 512x384 mosaics, each later frame moved by up to 5 px and 0.4 degrees."""
    root = tmp_path_factory.mktemp("handheld")
    synthesise([], root / "data", procedural=3, cfg=SynthConfig(width=512, height=384, shift=5.0, rotate=0.4), seed=21)
    return root / "data"


def _truth(source) -> list[dict]:
    return json.loads((source.frames[0].path.parent / "synth.json").read_text())["motion"]["frames"]


def _matrix(dx: float, dy: float, degrees: float, h: int, w: int) -> np.ndarray:
    """The 3x3 reference -> frame warp of a turn about the image centre followed by (dx, dy)."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, cx - c * cx + s * cy + dx], [s, c, cy - s * cx - c * cy + dy], [0, 0, 1]])


def _mean_error(found: np.ndarray, truth: np.ndarray, h: int, w: int) -> float:
    """Mean distance, over a grid of the image, between where the two warps send a point."""
    ys, xs = np.mgrid[0:h:16, 0:w:16]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    a, b = found @ pts, truth @ pts
    return float(np.hypot(*(a[:2] / a[2] - b[:2] / b[2])).mean())


def test_homography_registration_recovers_known_motion(handheld):
    errors = []
    for source in discover([handheld]):
        stack = load_stack(source)
        h, w = stack.frames.shape[-2:]
        _, motion = align_stack(stack.frames, stack.ratios, "homography")
        for m, t in zip(motion[1:], _truth(source)[1:]):
            assert m.status == "aligned"
            found = np.array(m.matrix).reshape(3, 3)
            errors.append(_mean_error(found, _matrix(t["dx"], t["dy"], t["rotation_deg"], h, w), h, w))
    # measured: median 0.05 px, worst 0.3 px (the target: median < 0.5 px)
    assert np.median(errors) < 0.5 and max(errors) < 1.0


def test_translation_registration_on_shifted_frames(tmp_path):
    synthesise([], tmp_path / "d", procedural=2, cfg=SynthConfig(width=512, height=384, shift=5.0), seed=22)
    errors = []
    for source in discover([tmp_path / "d"]):
        stack = load_stack(source)
        _, motion = align_stack(stack.frames, stack.ratios, "translation")
        for m, t in zip(motion[1:], _truth(source)[1:]):
            errors.append(math.hypot(m.dx - t["dx"], m.dy - t["dy"]))
    assert np.median(errors) < 0.25  # the target for translation


def test_registration_leaves_the_shared_pyramids_as_they_were(handheld):
    # the tripod test and every ECC round share one pyramid per frame pair; OpenCV 5.0's phaseCorrelate
    # windows its inputs in place, which would shift later rounds' coarse level
    stack = load_stack(discover([handheld])[0])
    size = align.registration_size(*stack.frames.shape[-2:])
    shrunk = [align._shrink(f, size) for f in stack.frames[:2]]
    pair = registration.Pair.of(*registration.prepare(shrunk[0], stack.ratios[0], shrunk[1], stack.ratios[1]))
    before = [[level.copy() for level in levels] for levels in (pair.template, pair.image, pair.t_mask, pair.i_mask)]
    _, run = registration.tripod_test(pair)
    registration.estimate_warp(pair, "homography", run)
    after = (pair.template, pair.image, pair.t_mask, pair.i_mask)
    assert all(np.array_equal(a, b) for x, y in zip(before, after) for a, b in zip(x, y))


def test_static_stack_is_left_untouched():
    source = discover([ROOT / "samples"])[0]
    stack = load_stack(source)
    before = stack.frames.copy()
    aligned, motion = align_stack(stack.frames, stack.ratios, "homography")
    assert [m.status for m in motion] == ["reference", "static", "static"]
    assert np.array_equal(aligned, before)  # under 0.05 px nothing is resampled


def test_a_tripod_stack_is_found_at_half_size_and_noted():
    # the samples are renderings of one radiance map: no frame moved, so the tripod test at half the
    # registration size settles every frame (static, with the reason) and the stack gets the note
    stack = register(load_stack(discover([ROOT / "samples"])[0]), "translation", deghost=False)
    assert [(m.status, m.reason) for m in stack.motion[1:]] == [("static", "moved under 0.1 px")] * 2
    assert any(n.startswith("tripod: no frame moved over 0.1 px") for n in stack.notes)


def test_a_shifted_frame_is_not_taken_for_a_tripod_one():
    # a whole-pixel shift of a real picture's frame must be registered, not stopped by the tripod test
    stack = load_stack(discover([ROOT / "samples"])[0])
    stack.frames[1] = np.roll(stack.frames[1], (2, -3), axis=(1, 2))
    out = register(stack, "translation", deghost=False)
    m = out.motion[1]
    assert m.status == "aligned" and m.reason is None
    # rolled 2 rows down and 3 columns left: a reference pixel (x, y) is at (x - 3, y + 2) in the frame
    assert abs(m.dx + 3) < 0.25 and abs(m.dy - 2) < 0.25
    assert not any(n.startswith("tripod") for n in out.notes)


def test_black_and_white_frames_are_reported_and_fused_unaligned(handheld):
    stack = load_stack(discover([handheld])[0])
    stack.frames[1] = 0.0  # entirely black
    stack.frames[2] = 1.0  # entirely white
    kept = stack.frames.copy()
    aligned, motion = align_stack(stack.frames, stack.ratios, "translation")
    assert [m.status for m in motion[1:]] == ["unaligned", "unaligned"]
    assert all("well exposed" in m.reason for m in motion[1:])
    assert np.array_equal(aligned, kept)


def test_uncovered_borders_take_the_reference_where_it_holds_them_else_the_frames_edge():
    rng = np.random.default_rng(0)
    reference = rng.random((4, 40, 50), dtype=np.float32) * 0.9
    reference[:, :, -2:] = 1.0  # clipped at the right edge: it says nothing of a darker frame there
    frame = rng.random((4, 40, 50), dtype=np.float32) * 0.25
    shift = np.array([[1.0, 0, 3.0], [0, 1.0, -2.0], [0, 0, 1]])  # reference pixel (x, y) -> frame (x + 3, y - 2)
    out, outside = warp_frame(frame, shift)
    assert np.allclose(out[:, 2:, :-3], frame[:, :-2, 3:], atol=1e-5)  # an integer shift is exact inside
    assert outside[:2].all() and outside[:, -3:].all() and not outside[2:, :-3].any()
    assert np.allclose(out[:, 2:, -3:], frame[:, :-2, -1:], atol=1e-5)  # replicated edge before filling
    fill_uncovered(out, outside, reference, 0.25, display_referred=False)
    assert np.allclose(out[:, :2, :-2], reference[:, :2, :-2] * 0.25)  # the reference at the frame's exposure
    assert np.allclose(out[:, 2:, -2:], frame[:, :-2, -1:], atol=1e-5)  # where it clipped, the frame's edge
    assert out.min() >= 0 and out.max() <= 1


def test_deghosting_replaces_a_moving_object_with_the_reference(tmp_path):
    synthesise([], tmp_path / "d", procedural=1, cfg=SynthConfig(width=512, height=384, moving_object=True), seed=4)
    source = discover([tmp_path / "d"])[0]
    params = json.loads((source.frames[0].path.parent / "synth.json").read_text())["motion"]["object"]
    stack = load_stack(source)
    frames = stack.frames.copy()
    shares = deghost(stack.frames, stack.ratios)
    assert shares[0] == 0 and max(shares[1:]) > 0.01
    # Where frame 2 shows the object and the reference does not, frame 2 now holds the reference's
    # background at frame 2's exposure.
    cx, cy = params["centres"][1]
    y, x = int(cy), int(cx)
    patch = (slice(None), slice(y - 3, y + 4), slice(x - 3, x + 4))
    expected = np.minimum(frames[0][patch] * stack.ratios[1], 1)
    assert frames[0][patch].max() < 0.98  # the reference is well exposed there (this seed)
    assert np.abs(stack.frames[1][patch] - expected).mean() < 0.2 * np.abs(frames[1][patch] - expected).mean()


def test_deghost_leaves_a_static_stack_alone():
    stack = load_stack(discover([ROOT / "samples"])[0])
    before = stack.frames.copy()
    shares = deghost(stack.frames, stack.ratios)
    assert max(shares) < 0.01 and np.abs(stack.frames - before).mean() < 1e-4


def test_fuse_json_and_inspect_report_each_frames_motion(handheld, tmp_path):
    r = runner.invoke(app, ["fuse", str(handheld), "-o", str(tmp_path / "out"), "--json", "--align", "homography"])
    assert r.exit_code == 0, r.stderr
    results = json.loads(r.stdout)["results"]
    for res in results:
        assert [m["status"] for m in res["motion"]] == ["reference", "aligned", "aligned"]
        assert {"dx", "dy", "rotation_deg", "correlation", "matrix", "ghost_share"} <= set(res["motion"][1])
    r = runner.invoke(app, ["inspect", str(handheld), "--align", "translation"])
    assert r.exit_code == 0 and "frame 2 aligned: moved" in r.stdout
    bad = runner.invoke(app, ["fuse", str(handheld), "-o", str(tmp_path / "x"), "--align", "affine"])
    assert bad.exit_code == 2 and "translation" in bad.stderr  # a usage error that lists the choices


def test_unalignable_frame_is_a_warning_not_a_failure(tmp_path):
    from conftest import smooth_scene, write_bracket_files

    # a smooth gradient without texture: ECC has nothing to lock onto
    write_bracket_files(tmp_path / "flat", smooth_scene() * 0 + 0.3, [1.0, 0.25], times=[1 / 60, 1 / 240])
    r = runner.invoke(app, ["fuse", str(tmp_path / "flat"), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0
    [res] = json.loads(r.stdout)["results"]
    assert res["status"] == "fused" and res["motion"][1]["status"] == "unaligned"
    assert "fused unaligned" in r.stderr and res["warnings"]


def test_register_with_alignment_off_changes_nothing():
    stack = load_stack(discover([ROOT / "samples"])[0])
    before = stack.frames.copy()
    out = register(stack, "none", False)
    assert np.array_equal(out.frames, before) and [m.status for m in out.motion] == [
        "reference",
        "unaligned",
        "unaligned",
    ]


@pytest.mark.slow
def test_real_handheld_stacks_fuse_with_alignment_and_report_motion(real, tmp_path):
    frobisher, taipei = real("ldr_stack_colour_hdri_frobisher_001"), real("ldr_stack_ssarcandy_taipei")
    r = runner.invoke(
        app,
        [
            "fuse",
            str(frobisher),
            str(taipei),
            "-o",
            str(tmp_path),
            "--format",
            "jpg",
            "--align",
            "homography",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    results = {x["stack"]: x for x in json.loads(r.stdout)["results"]}
    assert all(x["status"] == "fused" for x in results.values())
    night = results["ldr_stack_ssarcandy_taipei"]["motion"]
    assert len(night) == 10 and night[0]["status"] == "reference"
    # decoded through their Adobe RGB profile: frames 2-6 register under a pixel (static where under
    # 0.1 px); the dark frames 7-10 share too few well-exposed pixels with their neighbours and are
    # fused unaligned, each with a warning
    assert all(m["status"] in ("aligned", "static") and abs(m["dx"]) < 1 and abs(m["dy"]) < 1 for m in night[1:6])
    assert all(m["status"] == "unaligned" and m["reason"] for m in night[6:])
    assert r.stderr.count("fused unaligned") == 4


def test_matched_features_give_a_large_turned_and_shifted_motion():
    """feature_motion (the start when ECC fails from its own): a textured scene moved by (60, -90) px
    at its centre, turned by 2.5 degrees and zoomed by 3 % is found to 1 px and 0.1 degree."""
    rng = np.random.default_rng(5)
    scene = cv2.GaussianBlur(rng.random((600, 800)).astype(np.float32), (0, 0), 2.0)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    centre = (399.5, 299.5)
    truth = np.vstack([cv2.getRotationMatrix2D(centre, 2.5, 1.03), [0, 0, 1]])
    truth[:2, 2] += (60.0, -90.0)  # template pixel -> image pixel
    image = cv2.warpPerspective(scene, truth, (800, 600), flags=cv2.INTER_LINEAR)  # image(truth p) = scene(p)
    ones = np.ones((600, 800), np.uint8)
    found = feature_motion(scene, image, ones, ones)
    c = np.array([*centre, 1.0])
    assert np.allclose((found @ c)[:2], (truth @ c)[:2], atol=1.0)
    assert math.degrees(math.atan2(found[1, 0], found[0, 0])) == pytest.approx(
        math.degrees(math.atan2(truth[1, 0], truth[0, 0])), abs=0.1
    )
    with pytest.raises(ValueError, match="features"):
        feature_motion(np.zeros_like(scene), image, ones, ones)  # a blank frame has none


def test_deghost_quantiles_are_numpys_from_one_sort():
    # the intensity mapping's quantiles (one sort, not np.quantile's partition per quantile) are
    # np.quantile's to the last bit; by hand: [0, 1, 2, 10] at q = 0.5 lies halfway between 1 and 2
    from fusecli.registration import quantiles

    assert quantiles(np.array([10.0, 0.0, 2.0, 1.0]), np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 1.5, 10.0]
    rng = np.random.default_rng(3)
    q = np.linspace(0.0, 1.0, 64)
    for n in (1, 2, 5, 999, 40_001):
        x = (rng.random(n) ** 3).astype(np.float32)
        assert np.array_equal(quantiles(x, q), np.quantile(x, q))


def test_half_summary_gives_2x2_means_and_the_brightest_channels_maxima():
    from fusecli.align import half_summary

    frame = np.zeros((2, 2, 4), np.float32)
    frame[0] = [[0.0, 0.2, 1.0, 1.0], [0.4, 0.6, 1.0, 0.0]]
    frame[1] = [[0.9, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.1]]
    means, peak = half_summary(frame)
    assert np.allclose(means, [[[0.3, 0.75]], [[0.225, 0.025]]])  # (0 + .2 + .4 + .6) / 4, (1 + 1 + 1 + 0) / 4, ...
    assert peak.tolist() == [[np.float32(0.9), 1.0]]  # channel 1's 0.9 tops channel 0's 0.6 in the first block
    with pytest.raises(ValueError, match="even-sized"):
        half_summary(np.zeros((3, 5, 4), np.float32))


def test_deghosting_reads_the_same_4x4_blocks_from_the_half_summary():
    # 64-row bands, 4x4 blocks from 2x2 ones: the means agree to rounding, "no clipped pixel in the
    # block" exactly, for a frame of 200 x 120 with clipped spots
    from fusecli.align import half_summary
    from fusecli.registration import CLIP

    rng = np.random.default_rng(5)
    frame = np.clip(rng.random((3, 200, 120), dtype=np.float32) * 1.1, 0, 1)
    means, peak = half_summary(frame)
    small = (30, 50)
    direct = [cv2.resize(p, small, interpolation=cv2.INTER_AREA) for p in frame]
    derived = [cv2.resize(p, small, interpolation=cv2.INTER_AREA) for p in means]
    assert np.abs(np.array(direct) - np.array(derived)).max() < 1e-6
    ok = lambda top: cv2.resize((top < CLIP).astype(np.float32), small, interpolation=cv2.INTER_AREA) > 0.999  # noqa: E731
    assert np.array_equal(ok(frame.max(axis=0)), ok(peak)) and 0 < ok(peak).sum() < ok(peak).size


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_half_summary_agrees_with_block_means_and_maxima_across_bands(channels):
    # 130 rows: bands of 64, 64 and 2 rows; grey, RGB and packed-RAW planes
    from fusecli.align import half_summary

    frame = np.random.default_rng(channels).random((channels, 130, 66), dtype=np.float32)
    means, peak = half_summary(frame)
    assert np.abs(means - frame.reshape(channels, 65, 2, 33, 2).mean(axis=(2, 4))).max() < 1e-6
    assert np.array_equal(peak, frame.max(axis=0).reshape(65, 2, 33, 2).max(axis=(1, 3)))
