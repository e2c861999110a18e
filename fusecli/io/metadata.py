"""What a fused file carries of its frames: the reference frame's capture metadata (camera, lens,
exposure, capture time with sub-seconds and offset, GPS, XMP, artist, copyright) read from any frame
fusecli reads, and written into DNG, TIFF, JPEG and PNG outputs with a note of the fusion.

Tags are kept by number, as EXIF numbers them, and serialised by Pillow: its ``Exif`` for JPEG and
PNG, and its TIFF directory writer for the EXIF and GPS sub-IFDs that :func:`append_sub_ifds` adds
to a TIFF or DNG file tifffile wrote (tifffile writes no EXIF sub-IFD of its own).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import tifffile
from PIL import ExifTags, Image, TiffImagePlugin, TiffTags

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, ORIENTATION, SOFTWARE, DATETIME, ARTIST = 271, 272, 274, 305, 306, 315
COPYRIGHT, DESCRIPTION, XMP = 33432, 270, 700
#: The frame's own tags a fused file keeps (IFD 0): camera, and who owns the picture.
KEEP_IFD0 = (MAKE, MODEL, ARTIST, COPYRIGHT)
#: The EXIF tags it keeps: how and when the reference frame was shot, and with what lens.
KEEP_EXIF = tuple(
    ExifTags.Base[name]
    for name in (
        "ExposureTime",
        "FNumber",
        "ExposureProgram",
        "ISOSpeedRatings",
        "DateTimeOriginal",
        "DateTimeDigitized",
        "OffsetTime",
        "OffsetTimeOriginal",
        "OffsetTimeDigitized",
        "SubsecTimeOriginal",
        "SubsecTimeDigitized",
        "MeteringMode",
        "Flash",
        "FocalLength",
        "FocalLengthIn35mmFilm",
        "WhiteBalance",
        "BodySerialNumber",
        "LensSpecification",
        "LensMake",
        "LensModel",
        "LensSerialNumber",
    )
)
_NAMES = {**{v: k for k, v in ExifTags.TAGS.items()}, "ISOSpeedRatings": ExifTags.Base.ISOSpeedRatings}
_GPS_NAMES = {v: k for k, v in ExifTags.GPSTAGS.items()}
#: Placeholders tifffile can write where the EXIF and GPS sub-IFD pointers go (it refuses 34665
#: itself): unassigned codes that sort in the same place among IFD 0's entries, renamed once the
#: sub-IFDs are appended.
EXIF_PLACEHOLDER, GPS_PLACEHOLDER = 34666, 34854
# EXIF's ComponentsConfiguration is UNDEFINED; Pillow's table lacks it and would write BYTE.
TiffTags.TAGS_V2_GROUPS[EXIF_IFD].setdefault(
    ExifTags.Base.ComponentsConfiguration,
    TiffTags.TagInfo(ExifTags.Base.ComponentsConfiguration, "ComponentsConfiguration", TiffTags.UNDEFINED, 4),
)


@dataclass(frozen=True)
class Capture:
    """The capture metadata of one frame: IFD 0's tags (:data:`KEEP_IFD0`), the EXIF sub-IFD's
    (:data:`KEEP_EXIF`), the GPS sub-IFD's (all of them) by tag number, and the XMP packet."""

    ifd0: dict = field(default_factory=dict)
    exif: dict = field(default_factory=dict)
    gps: dict = field(default_factory=dict)
    xmp: bytes | None = None

    @classmethod
    def shot(
        cls,
        time: float | None = None,
        aperture: float | None = None,
        iso: float | None = None,
        timestamp: datetime | None = None,
        *,
        focal_length: float | None = None,
        lens: str | None = None,
        artist: str | None = None,
        copyright: str | None = None,
    ) -> Capture:
        """The tags of one shot given as numbers (None leaves a tag out; 0 is written as 0)."""
        exif: dict = {}
        if time is not None:
            exif[ExifTags.Base.ExposureTime] = _rational(time, 1_000_000)
        if aperture is not None:
            exif[ExifTags.Base.FNumber] = _rational(aperture, 100)
        if iso is not None:
            exif[ExifTags.Base.ISOSpeedRatings] = min(65535, int(round(iso)))
        if timestamp is not None:
            exif[ExifTags.Base.DateTimeOriginal] = timestamp.strftime("%Y:%m:%d %H:%M:%S")
        if focal_length is not None:
            exif[ExifTags.Base.FocalLength] = _rational(focal_length, 1000)
        if lens:
            exif[ExifTags.Base.LensModel] = lens
        ifd0 = {k: v for k, v in ((ARTIST, artist), (COPYRIGHT, copyright)) if v}
        return cls(ifd0, exif)

    def with_exposure_time(self, seconds: float) -> Capture:
        """This capture with another ExposureTime."""
        exif = {**self.exif, ExifTags.Base.ExposureTime: _rational(seconds, 1_000_000)}
        return Capture(self.ifd0, exif, self.gps, self.xmp)

    def with_gps(self, gps: dict) -> Capture:
        """This capture with ``gps`` (GPS tags by number) as its GPS sub-IFD."""
        return Capture(self.ifd0, self.exif, dict(gps), self.xmp)

    @property
    def timestamp(self) -> str | None:
        """DateTimeOriginal as EXIF writes it, or None."""
        value = self.exif.get(ExifTags.Base.DateTimeOriginal)
        return str(value) if value else None


def _rational(value: float, limit: int) -> TiffImagePlugin.IFDRational:
    f = Fraction(value).limit_denominator(limit)
    return TiffImagePlugin.IFDRational(f.numerator, f.denominator)


# --- reading -------------------------------------------------------------------------------------


def read_capture(path: Path) -> Capture:
    """The capture metadata of a frame file (JPEG, PNG, TIFF, and TIFF-based RAW: DNG, CR2, NEF,
    ARW...). Empty where the file has none or its tags cannot be read: metadata never fails a stack."""
    try:
        if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png"):
            return _pillow_capture(path)
        return _tiff_capture(path)
    except Exception:  # a damaged tag: the picture is fused without it
        return Capture()


def _pillow_capture(path: Path) -> Capture:
    with Image.open(path) as im:
        exif = im.getexif()
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        sub, gps = dict(exif.get_ifd(EXIF_IFD)), dict(exif.get_ifd(GPS_IFD))
        ifd0 = {t: exif[t] for t in KEEP_IFD0 if exif.get(t)}
    return Capture(ifd0, {t: sub[t] for t in KEEP_EXIF if t in sub}, gps, _bytes(xmp))


def _tiff_capture(path: Path) -> Capture:
    with tifffile.TiffFile(path) as tf:
        tags = tf.pages[0].tags
        ifd0 = {t: tags[t].value for t in KEEP_IFD0 if t in tags and tags[t].value}
        sub = {_NAMES.get(k, k): v for k, v in (tags["ExifTag"].value if "ExifTag" in tags else {}).items()}
        gps = {_GPS_NAMES.get(k, k): v for k, v in (tags["GPSTag"].value if "GPSTag" in tags else {}).items()}
        xmp = tags[XMP].value if XMP in tags else None
    exif = {t: _pillow_value(sub[t]) for t in KEEP_EXIF if t in sub}
    gps = {k: bytes(v) if k == 0 else _pillow_value(v) for k, v in gps.items() if isinstance(k, int)}  # 0: version
    return Capture(ifd0, exif, gps, _bytes(xmp))


def _pillow_value(value):
    """tifffile's reading of a tag (rationals as (num, den) pairs, flat tuples for several) -> the
    values Pillow writes (IFDRational)."""
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value) and len(value) % 2 == 0:
        pairs = [TiffImagePlugin.IFDRational(value[i], value[i + 1] or 1) for i in range(0, len(value), 2)]
        return pairs[0] if len(pairs) == 1 else tuple(pairs)
    return value


def _bytes(xmp) -> bytes | None:
    if not xmp:
        return None
    return xmp.encode() if isinstance(xmp, str) else bytes(xmp)


# --- writing -------------------------------------------------------------------------------------


def pillow_exif(
    capture: Capture, *, software: str, description: str, colour_space: int, size: tuple[int, int], jpeg: bool
) -> Image.Exif:
    """An ``Image.Exif`` for a JPEG or PNG output of ``size`` (width, height): the capture's tags, the
    fusion's note (Software and ImageDescription), Orientation 1 (outputs are upright), EXIF
    ColorSpace (1 sRGB, 65535 other) and the tags EXIF requires of a JPEG's."""
    exif = Image.Exif()
    exif.update(capture.ifd0)
    exif[SOFTWARE], exif[DESCRIPTION], exif[ORIENTATION] = software, description, 1
    if capture.timestamp:
        exif[DATETIME] = capture.timestamp
    sub = exif.get_ifd(EXIF_IFD)
    sub.update(_exif_ifd(capture, colour_space))
    sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = size
    if jpeg:
        exif[ExifTags.Base.XResolution] = exif[ExifTags.Base.YResolution] = TiffImagePlugin.IFDRational(72, 1)
        exif[ExifTags.Base.ResolutionUnit], exif[ExifTags.Base.YCbCrPositioning] = 2, 1
        sub[ExifTags.Base.ComponentsConfiguration] = b"\x01\x02\x03\x00"
    if capture.gps:
        exif.get_ifd(GPS_IFD).update(_gps_ifd(capture))
    return exif


def _exif_ifd(capture: Capture, colour_space: int | None) -> dict:
    """The EXIF sub-IFD's tags: the versions EXIF requires, the capture's, and ColorSpace."""
    exif = {ExifTags.Base.ExifVersion: b"0232", ExifTags.Base.FlashPixVersion: b"0100", **capture.exif}
    if colour_space is not None:
        exif[ExifTags.Base.ColorSpace] = colour_space
    return exif


def _gps_ifd(capture: Capture) -> dict:
    """The GPS sub-IFD's tags: the capture's, with the GPSVersionID EXIF requires."""
    return {0: b"\x02\x03\x00\x00", **capture.gps}


def tiff_tags(capture: Capture, *, software: str, description: str, camera: bool = True) -> list[tuple]:
    """tifffile ``extratags`` for IFD 0 of a TIFF or DNG output: the capture's own tags (``camera``:
    with Make and Model, which a DNG writes itself, and Orientation 1), the fusion's note, XMP, and the placeholders
    :func:`append_sub_ifds` turns into the EXIF and GPS pointers."""
    tags: list[tuple] = [(SOFTWARE, "s", 0, software, True), (DESCRIPTION, "s", 0, description, True)]
    if camera:  # a picture, upright (a DNG states its own orientation)
        tags.append((ORIENTATION, "H", 1, 1, True))
    for tag in KEEP_IFD0 if camera else (ARTIST, COPYRIGHT):
        if capture.ifd0.get(tag):
            tags.append((tag, "s", 0, str(capture.ifd0[tag]), True))
    if capture.xmp:
        tags.append((XMP, "B", len(capture.xmp), capture.xmp, True))
    tags.append((EXIF_PLACEHOLDER, "I", 1, 0, True))
    if capture.gps:
        tags.append((GPS_PLACEHOLDER, "I", 1, 0, True))
    return tags


def _ifd(tags: dict, group: int | None) -> TiffImagePlugin.ImageFileDirectory_v2:
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II", group=group)
    for tag, value in sorted(tags.items()):
        ifd[tag] = value
    return ifd


def append_sub_ifds(path: Path, capture: Capture, colour_space: int | None = None) -> None:
    """Append the EXIF sub-IFD (ExifVersion, the capture's tags and, for pictures, ColorSpace) and the
    GPS sub-IFD to a little-endian TIFF or DNG that :func:`tiff_tags`' placeholders were written to,
    and turn the placeholders into the pointers to them (LONG, as TIFF readers expect)."""
    with tifffile.TiffFile(path) as tf:
        if tf.byteorder != "<" or tf.is_bigtiff:
            return
        tags = tf.pages[0].tags
        placeholders = [code for code in (EXIF_PLACEHOLDER, GPS_PLACEHOLDER) if code in tags]
        slots = {code: (tags[code].offset, tags[code].valueoffset) for code in placeholders}
        subifds = tags.get(330)  # tifffile writes SubIFDs as type IFD (13); TIFF 6 says LONG
        subifds_at = subifds.offset if subifds is not None and subifds.count == 1 else None
    parts = [(EXIF_PLACEHOLDER, EXIF_IFD, _ifd(_exif_ifd(capture, colour_space), None))]
    if GPS_PLACEHOLDER in slots:
        parts.append((GPS_PLACEHOLDER, GPS_IFD, _ifd(_gps_ifd(capture), GPS_IFD)))
    with open(path, "r+b") as f:
        for placeholder, code, ifd in parts:
            f.seek(0, 2)
            at = f.tell() + (f.tell() % 2)
            f.write(b"\0" * (at - f.tell()) + ifd.tobytes(offset=at))
            code_at, value_at = slots[placeholder]
            f.seek(code_at)
            f.write(struct.pack("<HHI", code, 4, 1))
            f.seek(value_at)
            f.write(struct.pack("<I", at))
        if subifds_at is not None:
            f.seek(subifds_at + 2)
            f.write(struct.pack("<H", 4))


def exr_attributes(capture: Capture, description: str) -> dict:
    """OpenEXR's standard attributes for the shot: capDate, expTime, aperture, isoSpeed, owner
    (copyright, else artist), latitude/longitude/altitude, and the fusion's note as comments."""
    out: dict = {"comments": description}
    exif, gps = capture.exif, capture.gps
    if capture.timestamp:
        out["capDate"] = capture.timestamp
    for name, tag in (("expTime", ExifTags.Base.ExposureTime), ("aperture", ExifTags.Base.FNumber)):
        if exif.get(tag):
            out[name] = float(exif[tag])
    if exif.get(ExifTags.Base.ISOSpeedRatings):
        out["isoSpeed"] = float(exif[ExifTags.Base.ISOSpeedRatings])
    owner = capture.ifd0.get(COPYRIGHT) or capture.ifd0.get(ARTIST)
    if owner:
        out["owner"] = str(owner)
    for name, value_tag, ref_tag, negative in (("latitude", 2, 1, "S"), ("longitude", 4, 3, "W")):
        if gps.get(value_tag) and len(gps[value_tag]) == 3:
            d, m, sec = (float(v) for v in gps[value_tag])
            out[name] = (d + m / 60 + sec / 3600) * (-1 if str(gps.get(ref_tag, "")).upper() == negative else 1)
    return out
