"""Photographers' files in and out: a bracket's colour comes from its files' profiles, phone frames
stored sideways are read upright, every output carries the reference frame's metadata and a colour
profile, and the default output is the frames' own kind."""

import io
import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import ROOT, write_bracket_files
from PIL import Image, ImageCms, ImageOps, TiffImagePlugin
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.io import icc
from fusecli.metrics import mef_ssim
from fusecli.synth import DisplayConfig, synthesise

BRACKETS = ROOT.parent / "shared" / "data" / "brackets"
need_brackets = pytest.mark.skipif(not BRACKETS.is_dir(), reason="../shared/data/brackets is absent")
need_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
runner = CliRunner()
R = TiffImagePlugin.IFDRational

#: ProPhoto RGB (ROMM, D50) as Lightroom and RawTherapee export it: pure gamma 1.8.
_PROPHOTO = icc.ColourSpace(
    "ProPhoto RGB",
    (0.7976749, 0.1351917, 0.0313534, 0.2880402, 0.7118741, 0.0000857, 0.0, 0.0, 0.8252100),
    (icc.Curve("gamma", (1.8,)),) * 3,
)
PROPHOTO = icc.ColourSpace(_PROPHOTO.name, _PROPHOTO.to_xyz, _PROPHOTO.curves, icc.profile(_PROPHOTO))


def _fuse(*args):
    return runner.invoke(app, ["fuse", *map(str, args)])


def _display_bracket(folder: Path, seed: int = 3) -> list[tuple[Path, float]]:
    """A display-referred procedural bracket (8-bit sRGB PNG frames, 512x384): (frame, seconds)."""
    [written] = synthesise([], folder, procedural=1, display=DisplayConfig(size=512, frames=3), seed=seed)
    for frame in written.glob("frame_*.png"):  # landscape, so that a quarter turn shows
        Image.open(frame).crop((0, 0, 512, 384)).save(frame)
    lines = (written / "exposures.txt").read_text().split("\n")
    return [(written / name, float(t)) for name, t in (line.split() for line in lines if line.strip())]


def _real_bracket(name: str, side: int = 800) -> list[tuple[Image.Image, Image.Exif, str]]:
    """A real bracket's frames (downscaled to ``side``) with their EXIF and file names."""
    out = []
    for path in sorted(p for p in (BRACKETS / name).iterdir() if p.suffix.lower() == ".jpg"):
        with Image.open(path) as im:
            exif = im.getexif()
            small = im.convert("RGB")
            small.thumbnail((side, side))
        out.append((small, exif, path.name))
    return out


def write_profiled_tiff(path: Path, srgb8: np.ndarray, space: icc.ColourSpace) -> None:
    """A 16-bit TIFF as a raw converter exports it: the 8-bit sRGB picture (H, W, 3) converted into
    ``space`` (primaries and curve), its ICC profile embedded."""
    srgb = icc.srgb()
    linear = srgb.to_linear(np.moveaxis(srgb8.astype(np.float32) / 255, -1, 0))
    m = icc.matrix(srgb, space)
    if m is not None:
        linear = np.einsum("ij,jhw->ihw", m, linear)
    encoded = space.from_linear(np.clip(linear, 0, 1))
    data = np.round(np.moveaxis(encoded, 0, -1) * 65535).astype(np.uint16)
    tifffile.imwrite(path, data, photometric="rgb", iccprofile=space.icc)


def seen_in_srgb(path: Path) -> np.ndarray:
    """A fused TIFF as a colour-managed viewer shows it: through its own embedded profile into sRGB
    (LittleCMS, relative colorimetric), 8-bit (H, W, 3) float."""
    with tifffile.TiffFile(path) as tf:
        data, profile = tf.pages[0].asarray(), tf.pages[0].tags["InterColorProfile"].value
    picture = Image.fromarray(np.round(data / 257).astype(np.uint8))
    source = ImageCms.ImageCmsProfile(io.BytesIO(bytes(profile)))
    shown = ImageCms.profileToProfile(picture, source, ImageCms.createProfile("sRGB"), renderingIntent=1)
    return np.asarray(shown).astype(np.float32)


def _one_scene_four_ways(tmp_path: Path, frames: list[tuple[np.ndarray, str, float, Image.Exif | None]]) -> dict:
    """Write one bracket as 8-bit sRGB JPEGs and 16-bit sRGB, Adobe RGB and ProPhoto TIFFs, fuse each
    to a TIFF -> {kind: (H, W, 3) as seen in sRGB}."""
    spaces = {"srgb": icc.srgb(), "adobe": icc.adobe_rgb(), "prophoto": PROPHOTO}
    shown = {}
    for kind in ("jpeg", *spaces):
        folder = tmp_path / kind
        folder.mkdir()
        lines = []
        for rgb, stem, seconds, exif in frames:
            name = f"{stem}.jpg" if kind == "jpeg" else f"{stem}.tif"
            if kind == "jpeg":
                Image.fromarray(rgb).save(folder / name, quality=95, exif=exif or Image.Exif())
            else:
                write_profiled_tiff(folder / name, rgb, spaces[kind])
            lines.append(f"{name} {seconds}")
        (folder / "exposures.txt").write_text("\n".join(lines) + "\n")
        r = _fuse(folder, "-o", tmp_path / "out", "--format", "tiff", "--json")
        assert r.exit_code == 0, r.stderr
        shown[kind] = seen_in_srgb(tmp_path / "out" / f"{kind}_fused.tif")
    return shown


def test_one_scene_as_srgb_jpegs_and_srgb_adobe_prophoto_tiffs_looks_the_same(tmp_path):
    bracket = _display_bracket(tmp_path / "synth")
    frames = [(np.asarray(Image.open(p).convert("RGB")), p.stem, t, None) for p, t in bracket]
    shown = _one_scene_four_ways(tmp_path, frames)
    for kind in ("srgb", "adobe", "prophoto"):
        difference = np.abs(shown[kind] - shown["jpeg"]).mean()
        assert difference <= 4.0, (kind, difference)  # 8-bit levels, mean over the picture
    with tifffile.TiffFile(tmp_path / "out" / "prophoto_fused.tif") as tf:  # written in the frames' own space
        assert icc.parse(bytes(tf.pages[0].tags["InterColorProfile"].value)).name == "ProPhoto RGB"


@need_brackets
def test_a_real_phone_bracket_as_jpegs_and_converter_tiffs_looks_the_same(tmp_path):
    exposures = dict(
        line.split() for line in (BRACKETS / "chranderson_phone" / "exposures.txt").read_text().splitlines()
    )
    frames = [
        (np.asarray(im), Path(name).stem, float(exposures[name]), exif)
        for im, exif, name in _real_bracket("chranderson_phone")
    ]
    shown = _one_scene_four_ways(tmp_path, frames)
    for kind in ("srgb", "adobe", "prophoto"):
        difference = np.abs(shown[kind] - shown["jpeg"]).mean()
        assert difference <= 4.0, (kind, difference)


def _sideways(folder: Path, bracket: list[tuple[Path, float]], orientation: int) -> None:
    """The bracket as a phone stores it: pixels turned a quarter, EXIF Orientation saying how to
    show them (6: turn 90 degrees clockwise, 8: counter-clockwise), exposure times in EXIF."""
    folder.mkdir(parents=True)
    turn = {1: None, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    for path, seconds in bracket:
        upright = Image.open(path).convert("RGB")
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif.get_ifd(0x8769)[0x829A] = R(*(1, round(1 / seconds)))
        stored = upright if turn is None else upright.transpose(turn)
        stored.save(folder / f"{path.stem}.jpg", quality=95, exif=exif)
        assert np.array_equal(
            np.asarray(ImageOps.exif_transpose(Image.open(folder / f"{path.stem}.jpg"))).shape[:2],
            np.asarray(upright).shape[:2],
        )


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_phone_bracket_stored_sideways_fuses_upright(tmp_path, orientation):
    bracket = _display_bracket(tmp_path / "synth")
    _sideways(tmp_path / "upright", bracket, 1)
    _sideways(tmp_path / "phone", bracket, orientation)
    for name in ("upright", "phone"):
        assert _fuse(tmp_path / name, "-o", tmp_path / "out").exit_code == 0
    upright = Image.open(tmp_path / "out" / "upright_fused.jpg")
    phone = Image.open(tmp_path / "out" / "phone_fused.jpg")
    assert phone.size == upright.size == (512, 384)
    assert phone.getexif().get(0x0112) == 1  # shown as stored, by every viewer
    assert np.abs(np.asarray(phone, np.float32) - np.asarray(upright, np.float32)).mean() < 2.0
    # scored against the frames as a viewer shows them, as the upright bracket's fusion is
    shown = [np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "phone" / f"{p.stem}.jpg"))) for p, _ in bracket]
    tensor = lambda a: torch.from_numpy(np.moveaxis(np.asarray(a, np.float32) / 255, -1, 0))  # noqa: E731
    frames = torch.stack([tensor(f) for f in shown])[None]
    score = float(mef_ssim(frames, tensor(phone)[None]))
    assert score > 0.85 and score == pytest.approx(float(mef_ssim(frames, tensor(upright)[None])), abs=0.01)


# --- metadata --------------------------------------------------------------------------------------

#: GPS as a phone writes it: position, altitude and how it was found (GPSProcessingMethod).
GPS = {
    **{1: "N", 2: (R(45), R(31), R(434316, 10000)), 3: "W", 4: (R(122), R(53), R(17898, 1000))},
    **{6: R(32631, 1000), 27: b"ASCII\0\0\0GPS"},
}


XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
    b'<?xpacket end="w"?>'
)


def _tagged_jpegs(folder: Path, bracket: list[tuple[Path, float]]) -> None:
    """The bracket as a camera writes it: make, model, lens, exposure, capture time with sub-seconds
    and offset, GPS, artist, copyright, XMP."""
    folder.mkdir(parents=True)
    for k, (path, seconds) in enumerate(bracket):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110], exif[0x013B], exif[0x8298] = "Canon", "EOS R6", "A. Photographer", "(c) 2026 A. P."
        sub = exif.get_ifd(0x8769)
        sub[0x829A], sub[0x829D], sub[0x8827] = R(1, round(1 / seconds)), R(8, 1), 100
        sub[0x9003], sub[0x9291], sub[0x9011] = (
            datetime(2026, 6, 1, 9, 0, k).strftime("%Y:%m:%d %H:%M:%S"),
            "25",
            "+02:00",
        )
        sub[0xA434], sub[0x920A] = "RF24-105mm F4 L IS USM", R(35, 1)
        exif.get_ifd(0x8825).update(GPS)
        xmp = XMP
        Image.open(path).convert("RGB").save(folder / f"IMG_{k:04d}.jpg", quality=95, exif=exif, xmp=xmp)


def test_every_picture_carries_the_reference_frames_metadata_and_a_profile(tmp_path):
    _tagged_jpegs(tmp_path / "shoot", _display_bracket(tmp_path / "synth"))
    r = _fuse(tmp_path / "shoot", "-o", tmp_path / "out", "--format", "jpg,png,tiff")
    assert r.exit_code == 0, r.stderr
    for ext in ("jpg", "png"):
        with Image.open(tmp_path / "out" / f"shoot_fused.{ext}") as im:
            exif, profile = im.getexif(), im.info["icc_profile"]
            sub, gps = exif.get_ifd(0x8769), exif.get_ifd(0x8825)
        assert (exif[0x010F], exif[0x0110], exif[0x8298]) == ("Canon", "EOS R6", "(c) 2026 A. P.")
        assert (sub[0x9003], sub[0x9291], sub[0x9011]) == (
            "2026:06:01 09:00:00",
            "25",
            "+02:00",
        )  # the brightest frame's
        assert sub[0xA434] == "RF24-105mm F4 L IS USM" and sub[0xA001] == 1  # ColorSpace sRGB
        assert gps[1] == "N" and float(gps[2][2]) == pytest.approx(43.4316)
        assert icc.parse(profile).is_srgb
    with tifffile.TiffFile(tmp_path / "out" / "shoot_fused.tif") as tf:
        tags = tf.pages[0].tags
        assert tags["Make"].value == "Canon" and tags["ExifTag"].value["DateTimeOriginal"] == "2026:06:01 09:00:00"
        assert tags["GPSTag"].value["GPSLatitudeRef"] == "N" and b'xmp:Rating="4"' in bytes(tags["XMP"].value)
        assert "3 frames" in tags["ImageDescription"].value


@need_exiftool
def test_exiftool_reads_every_outputs_camera_date_place_and_profile(tmp_path):
    _tagged_jpegs(tmp_path / "shoot", _display_bracket(tmp_path / "synth"))
    assert _fuse(tmp_path / "shoot", "-o", tmp_path / "out", "--format", "jpg,png,tiff").exit_code == 0
    write_bracket_files(
        tmp_path / "raw", np.linspace(0.05, 3, 96 * 128).reshape(96, 128), [1, 0.25], times=[1 / 30, 1 / 120], gps=GPS
    )
    assert _fuse(tmp_path / "raw", "-o", tmp_path / "out").exit_code == 0  # a DNG
    outputs = sorted((tmp_path / "out").iterdir())
    tags = ["-Make", "-DateTimeOriginal", "-GPSPosition", "-ProfileDescription", "-Orientation", "-Validate"]
    read = subprocess.run(["exiftool", "-json", *tags, *map(str, outputs)], capture_output=True, text=True, check=True)
    found = {Path(d["SourceFile"]).name: d for d in json.loads(read.stdout)}
    assert set(found) == {"shoot_fused.jpg", "shoot_fused.png", "shoot_fused.tif", "raw_fused.dng"}
    for name, d in found.items():
        assert d["GPSPosition"] == "45 deg 31' 43.43\" N, 122 deg 53' 17.90\" W", name
        assert d["Validate"] == "OK" and d["Orientation"] == "Horizontal (normal)", (name, d)
        assert d["DateTimeOriginal"].startswith("2026:"), name
        if name.startswith("shoot"):
            assert d["Make"] == "Canon" and d["ProfileDescription"] == "sRGB built-in", (name, d)


# --- what is written by default ------------------------------------------------------------------


def test_the_default_output_is_the_frames_own_kind(tmp_path):
    bracket = _display_bracket(tmp_path / "synth")
    _sideways(tmp_path / "jpegs", bracket, 1)
    pngs = tmp_path / "pngs"
    shutil.copytree(bracket[0][0].parent, pngs)
    tiffs = tmp_path / "tiffs"
    tiffs.mkdir()
    for path, _ in bracket:
        write_profiled_tiff(tiffs / f"{path.stem}.tif", np.asarray(Image.open(path).convert("RGB")), icc.srgb())
    (tiffs / "exposures.txt").write_text("".join(f"{p.stem}.tif {t}\n" for p, t in bracket))
    write_bracket_files(tmp_path / "raws", np.linspace(0.05, 3, 96 * 128).reshape(96, 128), [1, 0.25])
    r = _fuse(tmp_path / "jpegs", pngs, tiffs, tmp_path / "raws", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.stderr
    outputs = {Path(o).name for row in json.loads(r.stdout)["results"] for o in row["outputs"]}
    assert outputs == {"jpegs_fused.jpg", "pngs_fused.png", "tiffs_fused.tif", "raws_fused.dng"}
    assert tifffile.imread(tmp_path / "out" / "tiffs_fused.tif").dtype == np.uint16
    assert Image.open(tmp_path / "out" / "pngs_fused.png").mode == "RGB"
    high = (tmp_path / "out" / "jpegs_fused.jpg").stat().st_size
    assert _fuse(tmp_path / "jpegs", "-o", tmp_path / "q60", "--quality", "60").exit_code == 0
    assert (tmp_path / "q60" / "jpegs_fused.jpg").stat().st_size < 0.7 * high  # the default quality is high


# --- profiles ----------------------------------------------------------------------------------------


def test_profiles_round_trip_and_convert_with_the_published_matrices():
    for space in (icc.srgb(), icc.adobe_rgb(), PROPHOTO, icc.linear_srgb()):
        parsed = icc.parse(space.icc)
        assert parsed.name in (space.name, "sRGB built-in")  # (LittleCMS names its sRGB so)
        assert np.allclose(parsed.to_xyz, space.to_xyz, atol=5e-4) and parsed.is_srgb == space.is_srgb
        probe = np.linspace(0, 1, 257, dtype=np.float32)
        assert np.allclose(parsed.curves[0].to_linear(probe), space.curves[0].to_linear(probe), atol=1e-3)
    # Adobe RGB -> sRGB, linear, as published (both D65): red and blue widen, green stays
    expected = [[1.3983, -0.3983, 0.0], [0.0, 1.0, 0.0], [0.0, -0.0429, 1.0429]]
    assert np.allclose(icc.matrix(icc.adobe_rgb(), icc.srgb()), expected, atol=2e-3)
    assert icc.matrix(icc.srgb(), icc.linear_srgb()) is None  # same primaries: nothing to convert
    assert icc.srgb().is_srgb and not icc.adobe_rgb().is_srgb and not icc.linear_srgb().is_srgb
    # the sRGB curve: 0.5 encodes 0.2140 linear (IEC 61966-2-1), and back
    assert icc.SRGB_CURVE.to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-5)
    assert icc.SRGB_CURVE.from_linear(np.float32(0.21404)) == pytest.approx(0.5, abs=1e-5)
