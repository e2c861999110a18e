"""TIFF and 8-bit reading: the real LDR stacks, round trips, exposure lists, bad image files."""

import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile

from fusecli.develop import linear_to_srgb, srgb_to_linear
from fusecli.discover import discover
from fusecli.errors import FuseError
from fusecli.exposure import parse_sidecar
from fusecli.io.image import probe, probe_picture, read_frame, read_label, write_label
from fusecli.stack import load_stack


def test_frobisher_real_jpegs_read_in_exposure_order_with_exif_ratios(real):
    folder = real("ldr_stack_colour_hdri_frobisher_001")
    [source] = discover([folder])
    stack = load_stack(source)
    assert [i.path.name for i in stack.infos] == ["IMG_2602.jpg", "IMG_2601.jpg", "IMG_2600.jpg"]
    assert [i.exposure_time for i in stack.infos] == [8.0, 1.0, 0.125]
    assert stack.ratios == pytest.approx([1, 1 / 8, 1 / 64])
    assert stack.ratio_source == "exif" and stack.transfer == "srgb" and stack.kind == "rgb"
    assert stack.frames.shape == (3, 3, 426, 640) and stack.frames.dtype == np.float32
    # brightest first, linearised: the 8 s frame is the brightest, means fall with exposure
    means = stack.frames.mean(axis=(1, 2, 3))
    assert means[0] > means[1] > means[2]
    # linearised through the curve of the profile dcraw embedded (named "sRGB", a power of 495/256 =
    # 1.934), pixel for pixel, as a colour-managed viewer decodes it (the 8-bit mean is 34.7)
    bgr = cv2.imread(str(folder / "IMG_2600.jpg")).astype(np.float64) / 255
    assert bgr.mean() * 255 == pytest.approx(34.7, abs=0.05)
    assert stack.space.curves[0].params == (495 / 256,)
    linear = bgr ** (495 / 256)
    assert np.allclose(stack.frames[2], np.moveaxis(linear[..., ::-1], -1, 0), atol=1e-6)


def test_frobisher_ratios_estimated_from_pixels_when_metadata_is_ignored(real, tmp_path):
    """Estimation on real camera JPEGs: their tone curve is not sRGB, so only the order and a
    rough ratio can be expected (the EXIF says 1/8 per step)."""
    folder = real("ldr_stack_colour_hdri_frobisher_001")
    frames = []
    for name in ("IMG_2600.jpg", "IMG_2601.jpg", "IMG_2602.jpg"):
        img = cv2.imread(str(folder / name))
        cv2.imwrite(str(tmp_path / name.replace(".jpg", ".png")), img)  # PNG: no EXIF
        frames.append(name)
    [source] = discover([tmp_path])
    stack = load_stack(source)
    assert stack.ratio_source == "estimated"
    assert [i.path.stem for i in stack.infos] == ["IMG_2602", "IMG_2601", "IMG_2600"]
    assert 1 / 16 < stack.ratios[1] < 1 / 3 and stack.ratios[2] < stack.ratios[1] / 3


def test_taipei_real_pngs_with_their_exposure_list(real):
    folder = real("ldr_stack_ssarcandy_taipei")
    [source] = discover([folder])
    stack = load_stack(source)
    assert stack.ratio_source == "sidecar" and len(stack.infos) == 10
    assert [i.path.name for i in stack.infos] == [f"DSC_00{n}.png" for n in range(58, 68)]
    assert stack.ratios == pytest.approx([2.0**-k for k in range(10)])
    means = stack.frames.mean(axis=(1, 2, 3))
    assert np.all(np.diff(means) < 0)  # brightness falls with the listed exposure


def test_16bit_tiff_round_trip_is_linear_and_exact(tmp_path):
    from fusecli.io import icc

    rng = np.random.default_rng(0)
    data = rng.integers(0, 65536, (150, 30, 3)).astype(np.uint16)  # 150 rows: two bands of 64 and a partial one
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="rgb", iccprofile=icc.linear_srgb().icc)  # says linear
    [info] = probe(tmp_path / "a.tif")
    frame = read_frame(info)
    assert frame.shape == (3, 150, 30)
    assert np.array_equal(frame, np.moveaxis(data, -1, 0).astype(np.float32) / 65535)


def test_8bit_png_is_linearised_with_the_srgb_curve(tmp_path):
    data = np.arange(256, dtype=np.uint8).reshape(16, 16)
    cv2.imwrite(str(tmp_path / "g.png"), data)
    frame = read_frame(probe_picture(tmp_path / "g.png"))
    assert frame.shape == (1, 16, 16)
    assert frame[0, 0, 0] == 0 and frame[0, -1, -1] == 1
    assert frame.ravel()[10] == pytest.approx(10 / 255 / 12.92)  # linear toe of the sRGB curve
    assert frame.ravel()[128] == pytest.approx(((128 / 255 + 0.055) / 1.055) ** 2.4, rel=1e-6)
    assert np.allclose(linear_to_srgb(srgb_to_linear(data / 255.0)), data / 255.0, atol=1e-6)
    linear = read_frame(probe_picture(tmp_path / "g.png"), transfer="linear")
    assert linear.ravel()[128] == pytest.approx(128 / 255)
    # colour: each channel through the curve, in RGB order, straight into a stack's slot
    bgr = np.stack([data, 255 - data, np.full_like(data, 128)], axis=-1)  # B, G, R as OpenCV writes them
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    slot = np.full((3, 16, 16), -1.0, np.float32)
    rgb = read_frame(probe_picture(tmp_path / "c.png"), out=slot)
    expected = srgb_to_linear(np.stack([bgr[..., 2], bgr[..., 1], bgr[..., 0]]) / 255.0)
    assert rgb is slot and np.allclose(slot, expected, atol=1e-6)


def test_float_tiff_with_nan_is_refused_and_values_above_one_clipped(tmp_path):
    data = np.full((8, 8), 0.5, np.float32)
    data[2, 3] = 1.7
    tifffile.imwrite(tmp_path / "ok.tif", data)
    frame = read_frame(probe(tmp_path / "ok.tif")[0])
    assert frame[0, 2, 3] == 1.0 and frame[0, 0, 0] == 0.5
    data[1, 1] = np.nan
    data[4, 4] = np.inf
    tifffile.imwrite(tmp_path / "bad.tif", data)
    with pytest.raises(FuseError, match=r"bad\.tif: 2 NaN/Inf pixel values"):
        read_frame(probe(tmp_path / "bad.tif")[0])


def test_multi_page_tiff_is_one_stack_with_per_page_exposures(tmp_path):
    scene = np.linspace(0.01, 3.0, 40 * 60, dtype=np.float32).reshape(40, 60)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for t in (1 / 15, 1 / 60, 1 / 240):  # written in capture order, not brightest first
            page = np.clip(scene * t * 15, 0, 1)
            tw.write((page * 65535).astype(np.uint16), extratags=[(33434, "2I", 1, (1, round(1 / t)), True)])
    [source] = discover([path])
    stack = load_stack(source)
    assert stack.ratio_source == "exif" and stack.ratios == pytest.approx([1, 0.25, 0.0625])
    assert [i.page for i in stack.infos] == [0, 1, 2] and stack.frames.shape == (3, 1, 40, 60)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a.png 1/8\nb.png 0.5\n", {"a.png": 0.125, "b.png": 0.5}),
        ("# Filename exposure 1/shutter_speed\na.png 32 0.03125\nb.png 0.0625 16\n", {"a.png": 32, "b.png": 0.0625}),
        ("# Filename 1/shutter_speed f/stop\nm1.ppm 0.03125 8\nm2.ppm 4 8\n", {"m1.ppm": 32, "m2.ppm": 0.25}),
        ("\n# comment\nx.tif 2  \n", {"x.tif": 2.0}),
    ],
)
def test_exposure_list_formats(tmp_path, text, expected):
    (tmp_path / "exposures.txt").write_text(text)
    assert parse_sidecar(tmp_path / "exposures.txt") == pytest.approx(expected)


def test_bad_exposure_list_line_is_named(tmp_path):
    (tmp_path / "exposures.txt").write_text("a.png 1/8\nb.png fast\n")
    with pytest.raises(FuseError, match=r"exposures\.txt:2: expected 'file seconds'"):
        parse_sidecar(tmp_path / "exposures.txt")


def test_label_round_trip(tmp_path):
    label = np.random.default_rng(0).random((4, 12, 16)).astype(np.float32)
    write_label(tmp_path / "label.tif", label)
    assert np.array_equal(read_label(tmp_path / "label.tif"), label)


def test_not_an_image(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("not a jpeg at all")
    with pytest.raises(FuseError, match=r"photo\.jpg: not an image"):
        probe_picture(path)


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", noise)  # large scan data: the cut falls inside it
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(FuseError, match=r"cut\.jpg: truncated JPEG"):
        read_frame(probe_picture(path))


def test_absurd_dimensions_are_refused_before_decoding(tmp_path):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    (tmp_path / "huge.png").write_bytes(png)
    with pytest.raises(FuseError, match=r"huge\.png: absurd dimensions"):
        probe_picture(tmp_path / "huge.png")


def test_frames_over_the_size_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    import fusecli.io.common as common

    tifffile.imwrite(tmp_path / "big.tif", np.zeros((100, 120), np.uint16))
    monkeypatch.setattr(common, "MAX_PIXELS", 10_000)  # the header says 12,000 pixels
    with pytest.raises(FuseError, match=r"big\.tif: absurd dimensions 120x100x1"):
        probe(tmp_path / "big.tif")
