"""Colour spaces of frames and outputs: ICC matrix/TRC profiles read and written (the form every RGB
working space takes: sRGB, Display P3, Adobe RGB, ProPhoto, their linear variants, grey).

A :class:`ColourSpace` is three primaries (a 3x3 matrix from linear RGB to the ICC connection space,
XYZ relative to D50) and a tone curve per channel (the TRC that encodes linear light into the file's
values), with the profile's bytes to embed in outputs. Frames are linearised through their curves
and converted between primaries by 3x3 matrices; outputs are encoded with the stack's curves and
tagged with its profile. Profiles built from lookup tables (printer and camera input profiles) are
not matrix/TRC: :func:`parse` returns None for them and the caller says what it does instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

#: D50, the ICC connection space's white (XYZ).
D50 = (0.9642, 1.0, 0.8249)


@dataclass(frozen=True)
class Curve:
    """An ICC tone reproduction curve, from encoded values [0, 1] to linear light [0, 1]: ``gamma``
    (params: g), ``table`` (params: the table's values over [0, 1], evenly spaced) or ``para`` (the
    ICC parametric function, params: type, g, a, b, c, d, e, f)."""

    kind: str
    params: tuple[float, ...]

    def to_linear(self, x: np.ndarray) -> np.ndarray:
        """Encoded values (any shape, [0, 1]) -> linear light, float32."""
        x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
        if self.kind == "gamma":
            return np.power(x, np.float32(self.params[0]))
        if self.kind == "table":
            table = np.asarray(self.params, np.float32)
            return np.interp(x, np.linspace(0, 1, table.size), table).astype(np.float32)
        kind, g, a, b, c, d, e, f = (*self.params, *(0.0,) * (8 - len(self.params)))
        x64 = x.astype(np.float64)
        if kind == 0:
            y = x64**g
        elif kind == 1:
            y = np.where(x64 >= -b / a, np.maximum(a * x64 + b, 0) ** g, 0.0)
        elif kind == 2:
            y = np.where(x64 >= -b / a, np.maximum(a * x64 + b, 0) ** g + c, c)
        elif kind == 3:
            y = np.where(x64 >= d, np.maximum(a * x64 + b, 0) ** g, c * x64)
        else:
            y = np.where(x64 >= d, np.maximum(a * x64 + b, 0) ** g + e, c * x64 + f)
        return np.clip(y, 0.0, 1.0).astype(np.float32)

    @cached_property
    def _inverse(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.linspace(0.0, 1.0, 65536, dtype=np.float64)
        y = np.maximum.accumulate(self.to_linear(x).astype(np.float64))  # (monotone: a curve may dip)
        return y, x

    def from_linear(self, y: np.ndarray) -> np.ndarray:
        """Linear light (any shape, [0, 1]) -> encoded values [0, 1], float32 (the curve inverted by
        interpolation over 65 536 samples: finer than a 16-bit output's steps)."""
        y = np.array(np.clip(np.asarray(y, np.float32), 0.0, 1.0), np.float32)  # an array, even of one value
        if self.kind == "gamma":
            return np.power(y, np.float32(1.0 / self.params[0]))
        if self.kind == "para" and self.params[0] == 3:  # sRGB's form: inverted in closed form, in place
            _, g, a, b, c, d = self.params
            low = y < np.float32(c * d)
            linear_part = y[low] / np.float32(c)
            np.power(y, np.float32(1.0 / g), out=y)
            y -= np.float32(b)
            y /= np.float32(a)
            y[low] = linear_part
            return np.clip(y, 0.0, 1.0, out=y)
        table_y, table_x = self._inverse
        return np.interp(y, table_y, table_x).astype(np.float32)

    @property
    def linear(self) -> bool:
        return (self.kind == "gamma" and abs(self.params[0] - 1.0) < 1e-3) or (
            self.kind == "para" and self.params[0] == 0 and abs(self.params[1] - 1.0) < 1e-3
        )


#: The sRGB curve (IEC 61966-2-1) as the ICC parametric function of type 3.
SRGB_CURVE = Curve("para", (3, 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
LINEAR = Curve("gamma", (1.0,))
#: Linear sRGB (Rec. 709 primaries) -> XYZ relative to D50 (Bradford-adapted, as ICC profiles store it).
SRGB_TO_XYZ_D50 = (0.4360747, 0.3850649, 0.1430804, 0.2225045, 0.7168786, 0.0606169, 0.0139322, 0.0971045, 0.7141733)


@dataclass(frozen=True)
class ColourSpace:
    """A matrix/TRC colour space: ``name``, ``to_xyz`` (9 numbers, row-major: linear RGB -> XYZ D50;
    None for grey), one :class:`Curve` per channel, and the ICC profile's bytes (:func:`profile`
    makes them for a space built here)."""

    name: str
    to_xyz: tuple[float, ...] | None
    curves: tuple[Curve, ...]
    icc: bytes | None = None

    @property
    def linear(self) -> bool:
        """Whether its values are linear light (no tone curve)."""
        return all(c.linear for c in self.curves)

    @property
    def is_srgb(self) -> bool:
        """Whether it is sRGB: its primaries, and the sRGB curve (or a table or parametric function of it)."""
        if self.to_xyz is None or not np.allclose(self.to_xyz, SRGB_TO_XYZ_D50, atol=2e-3):
            return False
        probe = np.linspace(0, 1, 33, dtype=np.float32)
        want = SRGB_CURVE.to_linear(probe)
        return all(np.allclose(c.to_linear(probe), want, atol=2e-3) for c in self.curves)

    def with_curve(self, curve: Curve, name: str) -> ColourSpace:
        """The same primaries with another curve (its profile made by :func:`profile`)."""
        space = ColourSpace(name, self.to_xyz, (curve,) * len(self.curves))
        return ColourSpace(name, self.to_xyz, space.curves, profile(space))

    def to_linear(self, chw: np.ndarray) -> np.ndarray:
        """(C, H, W) encoded [0, 1] -> linear light, float32, each channel through its curve."""
        if len(self.curves) == 1 or all(c == self.curves[0] for c in self.curves):
            return self.curves[0].to_linear(chw)
        return np.stack([c.to_linear(p) for c, p in zip(self.curves, chw)])

    def from_linear(self, chw: np.ndarray) -> np.ndarray:
        """(C, H, W) linear light [0, 1] -> encoded values [0, 1], float32."""
        if len(self.curves) == 1 or all(c == self.curves[0] for c in self.curves):
            return self.curves[0].from_linear(chw)
        return np.stack([c.from_linear(p) for c, p in zip(self.curves, chw)])


def matrix(source: ColourSpace, target: ColourSpace) -> np.ndarray | None:
    """3x3 float32 taking linear RGB in ``source``'s primaries to ``target``'s, or None where they are
    the same (or either is grey)."""
    if source.to_xyz is None or target.to_xyz is None:
        return None
    a = np.asarray(source.to_xyz, np.float64).reshape(3, 3)
    b = np.asarray(target.to_xyz, np.float64).reshape(3, 3)
    if np.allclose(a, b, atol=1e-4):
        return None
    return (np.linalg.inv(b) @ a).astype(np.float32)


# --- reading profiles ----------------------------------------------------------------------------


def _s15(data: bytes, at: int, n: int) -> tuple[float, ...]:
    return tuple(v / 65536 for v in struct.unpack_from(f">{n}i", data, at))


def _curve(data: bytes, at: int) -> Curve | None:
    kind = data[at : at + 4]
    if kind == b"curv":
        (n,) = struct.unpack_from(">I", data, at + 8)
        if n == 0:
            return LINEAR
        if n == 1:
            return Curve("gamma", (struct.unpack_from(">H", data, at + 12)[0] / 256,))
        values = np.asarray(struct.unpack_from(f">{n}H", data, at + 12), np.float64) / 65535
        return Curve("table", tuple(float(v) for v in values))
    if kind == b"para":
        (function,) = struct.unpack_from(">H", data, at + 8)
        count = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}.get(function)
        return None if count is None else Curve("para", (function, *_s15(data, at + 12, count)))
    return None


def parse(icc: bytes) -> ColourSpace | None:
    """An ICC profile's colour space, or None where it is not an RGB or grey matrix/TRC display or
    input profile (a lookup-table profile, a CMYK one, or not a profile at all)."""
    try:
        space = icc[16:20]
        (count,) = struct.unpack_from(">I", icc, 128)
        tags = {}
        for k in range(count):
            sig, offset, _ = struct.unpack_from(">4sII", icc, 132 + 12 * k)
            tags[sig] = offset
        if space == b"GRAY" and b"kTRC" in tags:
            curve = _curve(icc, tags[b"kTRC"])
            return None if curve is None else ColourSpace(_description(icc), None, (curve,), bytes(icc))
        if space != b"RGB " or not all(t in tags for t in (b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC")):
            return None
        columns = [_s15(icc, tags[t] + 8, 3) for t in (b"rXYZ", b"gXYZ", b"bXYZ")]
        to_xyz = tuple(float(columns[c][r]) for r in range(3) for c in range(3))
        curves = tuple(_curve(icc, tags[t]) for t in (b"rTRC", b"gTRC", b"bTRC"))
        if any(c is None for c in curves):
            return None
        return ColourSpace(_description(icc), to_xyz, curves, bytes(icc))  # type: ignore[arg-type]
    except (struct.error, IndexError, ValueError, ZeroDivisionError):
        return None


def _description(icc: bytes) -> str:
    """The profile's description (Pillow reads both the v2 'desc' and the v4 'mluc' forms)."""
    import io

    from PIL import ImageCms

    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.profile_description.strip() or "ICC profile"
    except (OSError, ImageCms.PyCMSError, ValueError):
        return "ICC profile"


# --- writing profiles ----------------------------------------------------------------------------


def _tag_xyz(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(v * 65536) for v in xyz))


def _tag_curve(curve: Curve) -> bytes:
    if curve.kind == "gamma":
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(curve.params[0] * 256)) + b"\0\0"
    if curve.kind == "para":
        function, *values = curve.params
        return (
            b"para\0\0\0\0"
            + struct.pack(">Hxx", int(function))
            + struct.pack(f">{len(values)}i", *(round(v * 65536) for v in values))
        )
    table = struct.pack(f">I{len(curve.params)}H", len(curve.params), *(round(v * 65535) for v in curve.params))
    return b"curv\0\0\0\0" + table + (b"\0\0" if len(curve.params) % 2 else b"")


def _tag_text(kind: bytes, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if kind == b"desc":  # v2 textDescriptionType: ASCII, then empty Unicode and ScriptCode parts
        body = b"desc\0\0\0\0" + struct.pack(">I", len(raw) + 1) + raw + b"\0" + b"\0" * 12 + b"\0" * 67
    else:
        body = b"text\0\0\0\0" + raw + b"\0"
    return body + b"\0" * (-len(body) % 4)


def profile(space: ColourSpace) -> bytes:
    """A version 2 ICC display profile (matrix/TRC) for ``space``: what outputs embed, so any
    colour-managed viewer shows them in their colours."""
    if space.to_xyz is None:
        entries = [
            (b"desc", _tag_text(b"desc", space.name)),
            (b"wtpt", _tag_xyz(D50)),
            (b"kTRC", _tag_curve(space.curves[0])),
        ]
        colour = b"GRAY"
    else:
        m = np.asarray(space.to_xyz).reshape(3, 3)
        entries = [
            (b"desc", _tag_text(b"desc", space.name)),
            (b"cprt", _tag_text(b"cprt", "No copyright: made by fusecli")),
            (b"wtpt", _tag_xyz(D50)),
            (b"rXYZ", _tag_xyz(m[:, 0])),
            (b"gXYZ", _tag_xyz(m[:, 1])),
            (b"bXYZ", _tag_xyz(m[:, 2])),
            (b"rTRC", _tag_curve(space.curves[0])),
            (b"gTRC", _tag_curve(space.curves[1])),
            (b"bTRC", _tag_curve(space.curves[2])),
        ]
        colour = b"RGB "
    table_at = 128 + 4 + 12 * len(entries)
    data, table, at = b"", b"", table_at
    for sig, body in entries:
        table += struct.pack(">4sII", sig, at + len(data), len(body))
        data += body
    size = table_at + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", colour, b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 4 + struct.pack(">I", 0) + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
    header += struct.pack(">3i", *(round(v * 65536) for v in D50)) + b"\0" * 4
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(entries)) + table + data


@lru_cache(maxsize=1)
def srgb() -> ColourSpace:
    """sRGB, with the profile LittleCMS builds for it (through Pillow)."""

    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return ColourSpace("sRGB", SRGB_TO_XYZ_D50, (SRGB_CURVE,) * 3, icc)


@lru_cache(maxsize=1)
def linear_srgb() -> ColourSpace:
    """sRGB's primaries with linear light (no curve): RAW developments kept linear, float frames."""
    return srgb().with_curve(LINEAR, "Linear sRGB (fusecli)")


@lru_cache(maxsize=1)
def adobe_rgb() -> ColourSpace:
    """Adobe RGB (1998), which EXIF ColorSpace 'uncalibrated' with interoperability index R03 names."""
    to_xyz = (0.6097559, 0.2052401, 0.1492240, 0.3111242, 0.6256560, 0.0632197, 0.0194811, 0.0608902, 0.7448387)
    space = ColourSpace("Adobe RGB (1998)", to_xyz, (Curve("gamma", (563 / 256,)),) * 3)
    return ColourSpace(space.name, to_xyz, space.curves, profile(space))
