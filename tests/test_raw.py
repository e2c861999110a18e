"""RAW reading: DNG round trips for every CFA phase, the real Canon DNG, bad RAW files."""

import numpy as np
import pytest
import rawpy
import tifffile
from conftest import camera, smooth_scene, write_bracket_files

from fusecli.discover import discover
from fusecli.errors import FuseError
from fusecli.io.dng import write_dng
from fusecli.io.metadata import Capture
from fusecli.io.raw import (
    BAND_ROWS,
    cfa_offsets,
    normalise_planes,
    pack_bayer,
    probe_raw,
    read_camera,
    read_raw,
    unpack_bayer,
)
from fusecli.stack import load_stack


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_dng_round_trip_is_exact_for_every_phase(tmp_path, cfa):
    rng = np.random.default_rng(1)
    cam = camera(cfa)
    mosaic = rng.integers(0, 4096, (48, 64)).astype(np.uint16)
    write_dng(tmp_path / "f.dng", mosaic, cam, Capture.shot(time=1 / 125, aperture=5.6, iso=400))
    # LibRaw sees the mosaic we wrote, value for value ...
    with rawpy.imread(str(tmp_path / "f.dng")) as raw:
        assert np.array_equal(raw.raw_image_visible, mosaic)
    # ... and fusecli packs it into R, G1, G2, B whatever the phase.
    planes, info, got = read_raw(tmp_path / "f.dng")
    assert got.cfa == cfa and planes.shape == (4, 24, 32) and planes.dtype == np.float32
    black = np.array(cam.black_level)[:, None, None]
    dn = np.round(planes.astype(np.float64) * (cam.white_level - black) + black)
    expected = pack_bayer(mosaic, cfa).astype(np.float64)
    inside = (expected > black) & (expected < cam.white_level)  # values clipped to [0, 1] aside
    assert np.array_equal(dn[inside], expected[inside])
    assert np.all(planes[expected <= black] == 0) and np.all(planes[expected >= cam.white_level] == 1)
    assert got.black_level == cam.black_level and got.white_level == 4095
    assert info.exposure_time == pytest.approx(1 / 125) and info.iso == 400 and info.aperture == pytest.approx(5.6)
    assert got.white_balance == pytest.approx(cam.white_balance, rel=1e-5)
    assert got.color_matrix == pytest.approx(cam.color_matrix, abs=1e-4)


def test_normalising_in_bands_covers_odd_mosaics_and_partial_bands():
    # 2 * 37 + 1 rows, 2 * 21 + 1 columns: a last band of 37 - 2 * 16 = 5 rows, an odd row and column
    # the planes leave out; black 100..400 per site, white 1100.
    assert 37 % BAND_ROWS != 0
    cam = camera("GRBG", black=(100.0, 200.0, 300.0, 400.0), white=1100.0)
    mosaic = np.random.default_rng(2).integers(0, 1200, (75, 43)).astype(np.uint16)
    mosaic[0, 1] = 600  # R of GRBG: (600 - 100) / 1000
    mosaic[1, 0] = 50  # B, under its black level: 0
    mosaic[2, 0] = 1150  # G1 (red's row), over white: 1
    planes = np.full((4, 37, 21), np.nan, np.float32)
    normalise_planes(mosaic, cam, planes)
    assert planes[0, 0, 0] == np.float32(0.5) and planes[3, 0, 0] == 0 and planes[1, 1, 0] == 1
    for i, (dy, dx) in enumerate(cfa_offsets("GRBG")):
        black = np.float32(cam.black_level[i])
        site = mosaic[dy : 2 * 37 : 2, dx : 2 * 21 : 2].astype(np.float32)
        expected = np.clip((site - black) * np.float32(1 / (1100.0 - cam.black_level[i])), 0, 1)
        assert np.array_equal(planes[i], expected)


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_plane_order_is_canonical(cfa):
    # A mosaic where every pixel holds the index of its colour: R=0, G1 (red's row)=1, G2=2, B=3.
    mosaic = np.zeros((4, 4), np.int32)
    for value, (dy, dx) in enumerate(cfa_offsets(cfa)):
        mosaic[dy::2, dx::2] = value
        assert cfa[2 * dy + dx] == "RGGB"[value]
    planes = pack_bayer(mosaic, cfa)
    assert [int(p.mean()) for p in planes] == [0, 1, 2, 3]
    assert np.array_equal(unpack_bayer(planes, cfa), mosaic)


def test_the_real_canon_dng(real):
    path = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    info, cam = probe_raw(path), read_camera(path)
    assert cam.cfa == "RGGB" and cam.black_level == (2056.0,) * 4 and cam.white_level == 15000
    assert (info.width, info.height) == (1734 // 2, 1156 // 2)
    # EXIF says exposure 0 (LibRaw would report 1 s): fusecli treats it as missing
    assert info.exposure_time is None and info.iso is None
    assert cam.color_matrix[:3] == pytest.approx((0.6461, -0.1164, -0.0857))
    planes, _, _ = read_raw(path)
    with rawpy.imread(str(path)) as raw:
        visible = raw.raw_image_visible.astype(np.float64)
    expected = np.clip((visible[0::2, 0::2] - 2056) / (15000 - 2056), 0, 1)
    assert np.allclose(planes[0], expected, atol=1e-6)
    assert 0.0 < planes.mean() < 0.6


def test_a_bracket_from_the_real_dng_with_zero_exposure_gets_estimated_ratios(real, tmp_path):
    """Two darker copies of the real sensor data, all with EXIF exposure 0, as Magic Lantern writes."""
    path = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    with rawpy.imread(str(path)) as raw:
        mosaic = raw.raw_image_visible[:1156, :1734].astype(np.float64)
    cam = read_camera(path)
    scene = (mosaic - 2056) / (15000 - 2056) * 1.5  # brighter than the capture, so the 1/1 frame clips
    write_bracket_files(tmp_path / "bracket", scene, [1, 0.25, 0.0625], cam=cam, times=[0, 0, 0])
    [source] = discover([tmp_path / "bracket"])
    stack = load_stack(source)
    assert stack.ratio_source == "estimated"
    assert stack.ratios == pytest.approx([1, 0.25, 0.0625], rel=0.03)
    assert any("estimated from the pixels" in n for n in stack.notes)
    assert stack.frames.shape == (3, 4, 578, 867)


def test_truncated_dng_is_refused(tmp_path):
    paths = write_bracket_files(tmp_path, smooth_scene(), [1, 0.25])
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(FuseError, match=r"IMG_0001\.dng: truncated, corrupt or not a RAW file"):
        read_raw(paths[0])


def test_not_a_raw_file(tmp_path):
    path = tmp_path / "notes.dng"
    path.write_text("a text file with a RAW extension\n" * 200)
    with pytest.raises(FuseError, match=r"notes\.dng: not a RAW file LibRaw can read"):
        probe_raw(path)


def test_non_bayer_dng_is_refused(tmp_path):
    path = tmp_path / "linear.dng"
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "x", True), (50717, "I", 1, (4095,), True)]
    tifffile.imwrite(path, np.full((32, 48, 3), 1000, np.uint16), photometric=34892, extratags=tags, metadata=None)
    try:
        rawpy.imread(str(path)).close()
    except rawpy.LibRawError:  # seen with tifffile 2026.9.20: its file is refused earlier, as not RAW
        pytest.skip(f"LibRaw does not open the linear DNG this tifffile ({tifffile.__version__}) writes")
    with pytest.raises(FuseError, match=r"linear\.dng: not a Bayer sensor"):
        read_raw(path)
