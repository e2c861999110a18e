"""The fused DNG as photographers' tools read it: Adobe's DNG SDK (dngpy), LibRaw, the source's names."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from conftest import ROOT, camera
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.io.dng import Tag, write_dng
from fusecli.io.metadata import Capture
from fusecli.io.raw import BAND_ROWS, cfa_offsets, read_camera
from fusecli.outputs import to_mosaic

runner = CliRunner()


def test_adobe_dng_sdk_opens_every_fused_dng_of_the_demo(tmp_path):
    dngpy = pytest.importorskip("dngpy", reason="dngpy (the Adobe DNG SDK as a wheel) is in the test extra")
    r = runner.invoke(app, ["fuse", str(ROOT / "samples"), "-o", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.stderr
    outputs = [p for res in json.loads(r.stdout)["results"] for p in res["outputs"]]
    assert len(outputs) == 3
    for path in outputs:
        dng = dngpy.Dng(path)  # raised "Unable to find main image IFD" before NewSubFileType = 0
        assert dng.raw_pixels.shape[:2] == (384, 512)
        with tifffile.TiffFile(path) as tf:  # and a small sRGB preview for viewers that develop nothing
            [preview] = tf.pages[0].pages
            assert preview.shape == (192, 256, 3) and preview.dtype == np.uint8
        if shutil.which("exiftool"):
            out = subprocess.run(["exiftool", "-validate", "-warning", "-a", path], capture_output=True, text=True)
            assert out.stdout.split() == ["Validate", ":", "OK"], out.stdout


def test_main_ifd_and_names_follow_the_dng_specification(tmp_path):
    cam = camera()
    write_dng(tmp_path / "a.dng", np.zeros((8, 8), np.uint16), cam, Capture.shot(1 / 8, 4.0, 200))
    with tifffile.TiffFile(tmp_path / "a.dng") as tf:
        tags = {t.code: t.value for t in tf.pages[0].tags.values()}
    assert tags[Tag.NEW_SUBFILE_TYPE] == 0 and tags[Tag.CALIBRATION_ILLUMINANT_1] == 21  # D65 when unknown
    assert tags[Tag.UNIQUE_CAMERA_MODEL] == "fusecli test"


def test_the_sources_unique_camera_model_survives(real, tmp_path):
    source = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    cam = read_camera(source)
    assert (cam.make, cam.model, cam.unique_model) == ("Canon", "Canon EOS Kiss X4", "Canon EOS Kiss X4")
    write_dng(tmp_path / "b.dng", np.zeros((8, 8), np.uint16), cam)
    with tifffile.TiffFile(tmp_path / "b.dng") as tf:
        tags = {t.code: t.value for t in tf.pages[0].tags.values()}
    assert tags[Tag.UNIQUE_CAMERA_MODEL] == "Canon EOS Kiss X4"  # was "Canon Canon EOS Kiss X4"


def test_exposure_and_capture_date_sit_in_an_exif_ifd_that_exiftool_validates(tmp_path):
    import shutil
    import subprocess
    from datetime import datetime

    write_dng(
        tmp_path / "c.dng",
        np.zeros((48, 64), np.uint16),
        camera(),
        Capture.shot(1 / 8, 4.0, 200, datetime(2026, 5, 1, 10, 0)),
    )
    with tifffile.TiffFile(tmp_path / "c.dng") as tf:
        page = tf.pages[0]
        exif = page.tags["ExifTag"].value
        assert 33434 not in page.tags  # not in IFD 0, where exiftool warns about them
    assert exif["ExposureTime"] == (1, 8) and exif["FNumber"] == (4, 1) and exif["ISOSpeedRatings"] == 200
    assert exif["DateTimeOriginal"] == "2026:05:01 10:00:00"
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl)")
    out = subprocess.run(
        ["exiftool", "-validate", "-warning", "-a", str(tmp_path / "c.dng")], capture_output=True, text=True
    ).stdout
    assert out.split() == ["Validate", ":", "OK"], out


def test_the_reference_frames_capture_metadata_is_carried_over(tmp_path):
    """Capture date, exposure, lens, focal length, copyright and artist of the reference frame
    survive into the fused DNG (exiftool's -TagsFromFile behaviour)."""
    from datetime import datetime

    from conftest import smooth_scene

    from fusecli.io.metadata import read_capture
    from fusecli.io.raw import probe_raw

    scene, cam = smooth_scene(), camera()
    (tmp_path / "in").mkdir()
    for k, r in enumerate((1.0, 0.25)):
        mosaic = np.clip(np.minimum(scene * r, 1.0) * 3000 + 600, 0, 4095).astype(np.uint16)
        shot = Capture.shot(
            r / 8,
            4.0,
            200,
            datetime(2026, 5, 1, 10, 0, k),
            focal_length=35.0,
            lens="EF 24-70mm f/2.8L",
            copyright="(c) A. B.",
            artist="A. B.",
        )
        write_dng(tmp_path / "in" / f"IMG_{k + 1}.dng", mosaic, cam, shot)
    r = runner.invoke(app, ["fuse", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--align", "none"])
    assert r.exit_code == 0, r.stderr
    fused = tmp_path / "out" / "in_fused.dng"
    carried = read_capture(fused)
    assert carried.exif[42036] == "EF 24-70mm f/2.8L" and float(carried.exif[37386]) == 35.0  # lens, focal length
    assert carried.ifd0[33432] == "(c) A. B." and carried.ifd0[315] == "A. B."  # copyright, artist
    info = probe_raw(fused)  # its values are in the darkest frame's units: that frame's exposure time
    assert (info.exposure_time, info.iso, info.timestamp) == (0.03125, 200.0, datetime(2026, 5, 1, 10, 0, 0))
    r = runner.invoke(app, ["fuse", str(tmp_path / "in"), "-o", str(tmp_path / "tf"), "--dng", "fused"])
    assert r.exit_code == 0 and probe_raw(tmp_path / "tf" / "in_fused.dng").exposure_time == 0.125  # the reference's


def test_a_fused_canon_bracket_opens_in_the_adobe_sdk_with_its_camera_names(real, tmp_path):
    """A bracket made of the real Canon 550D sensor data (conftest writes it with the source's
    camera description), fused: the DNG opens in the Adobe SDK and keeps the source's names."""
    import rawpy
    from conftest import write_bracket_files

    dngpy = pytest.importorskip("dngpy", reason="dngpy (the Adobe DNG SDK as a wheel) is in the test extra")
    path = real("raw_single_canon_eos_kiss_x4_magiclantern_dng/colorchart.dng")
    with rawpy.imread(str(path)) as raw:
        mosaic = raw.raw_image_visible[:400, :600].astype(np.float64)
    scene = (mosaic - 2056) / (15000 - 2056) * 1.5
    write_bracket_files(
        tmp_path / "canon", scene, [1, 0.25, 0.0625], cam=read_camera(path), times=[1 / 8, 1 / 32, 1 / 128]
    )
    r = runner.invoke(app, ["fuse", str(tmp_path / "canon"), "-o", str(tmp_path / "out"), "--align", "none"])
    assert r.exit_code == 0, r.stderr
    fused = tmp_path / "out" / "canon_fused.dng"
    assert dngpy.Dng(str(fused)).raw_pixels.shape[:2] == (400, 600)
    with tifffile.TiffFile(fused) as tf:
        tags = tf.pages[0].tags
        assert (
            tags[int(Tag.UNIQUE_CAMERA_MODEL)].value == "Canon EOS Kiss X4"
            and tags["Model"].value == "Canon EOS Kiss X4"
        )


def test_a_dual_illuminant_calibration_is_kept(tmp_path):
    import dataclasses

    matrix2 = (
        7000,
        10000,
        -2000,
        10000,
        -500,
        10000,
        -4000,
        10000,
        12000,
        10000,
        2500,
        10000,
        -500,
        10000,
        1500,
        10000,
        6000,
        10000,
    )
    forward = (
        7000,
        10000,
        1500,
        10000,
        1000,
        10000,
        3000,
        10000,
        7000,
        10000,
        0,
        10000,
        0,
        10000,
        0,
        10000,
        8000,
        10000,
    )
    source = dataclasses.replace(
        camera(),
        illuminant=21,
        dng_colour=(("ColorMatrix2", matrix2), ("CalibrationIlluminant2", (17,)), ("ForwardMatrix1", forward)),
    )
    write_dng(tmp_path / "src.dng", np.zeros((48, 64), np.uint16), source)
    again = read_camera(tmp_path / "src.dng")
    assert dict(again.dng_colour) == {
        "ColorMatrix2": matrix2,
        "CalibrationIlluminant2": (17,),
        "ForwardMatrix1": forward,
    }
    write_dng(tmp_path / "fused.dng", np.zeros((48, 64), np.uint16), again)  # as fuse writes its output
    with tifffile.TiffFile(tmp_path / "fused.dng") as tf:
        tags = tf.pages[0].tags
        assert (
            tags[int(Tag.CALIBRATION_ILLUMINANT_2)].value == 17
            and tuple(tags[int(Tag.COLOR_MATRIX_2)].value) == matrix2
        )


@pytest.mark.parametrize("cfa", ["RGGB", "GBRG"])
def test_fused_planes_become_a_16_bit_mosaic_site_by_site(cfa):
    # 37 packed rows: two whole bands of BAND_ROWS and a partial one; values outside [0, 1] clip
    assert 37 % BAND_ROWS != 0
    planes = np.random.default_rng(3).uniform(-0.1, 1.1, (4, 37, 5)).astype(np.float32)
    planes[0, 36, 4] = 0.5  # 32767.5 rounds half to even: 32768
    planes[3, 0, 0] = 1 / 65535  # one code
    mosaic = to_mosaic(planes, cfa)
    assert mosaic.shape == (74, 10) and mosaic.dtype == np.uint16
    (ry, rx), (by, bx) = cfa_offsets(cfa)[0], cfa_offsets(cfa)[3]
    assert mosaic[72 + ry, 8 + rx] == 32768 and mosaic[by, bx] == 1
    for plane, (dy, dx) in zip(planes, cfa_offsets(cfa)):
        expected = np.clip(np.rint(plane * np.float32(65535)), 0, 65535)  # float32, as fuse's planes are
        assert np.array_equal(mosaic[dy::2, dx::2], expected)


def test_scene_linear_planes_become_a_half_float_mosaic_in_the_darkest_frames_units():
    planes = np.random.default_rng(4).uniform(0, 20, (4, 37, 5)).astype(np.float32)  # up to 20x white
    mosaic = to_mosaic(planes, "GRBG", np.float16, scale=1 / 16)
    assert mosaic.dtype == np.float16 and mosaic.max() == 1.0  # above the darkest frame's white: clipped
    for plane, (dy, dx) in zip(planes, cfa_offsets("GRBG")):
        assert np.array_equal(mosaic[dy::2, dx::2], np.clip(plane * np.float32(1 / 16), 0, 1).astype(np.float16))
