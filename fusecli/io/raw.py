"""Camera RAW reading through rawpy (LibRaw): the Bayer mosaic packed into R, G1, G2, B planes.

Packing: whatever the sensor's 2x2 phase (RGGB, BGGR, GRBG, GBRG), plane 0 is red, plane 1 the
green on red's rows (G1), plane 2 the green on blue's rows (G2), plane 3 blue, each at half
resolution; an odd last row or column of the visible area is dropped. Values are
``(raw - black[c]) / (white - black[c])`` per CFA channel, clipped to [0, 1] (noise below the black
level is clipped, as every raw developer does after black subtraction), not multiplied by the
exposure ratio.

Metadata: exposure time, ISO, aperture and capture time come from the file's EXIF through tifffile
when the RAW is TIFF-based (DNG, CR2, NEF, ARW, ...), else from LibRaw. LibRaw reports a placeholder
shutter of 1 s when a file's EXIF exposure is 0 (seen on the real Magic Lantern DNG), so EXIF wins.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rawpy
import tifffile

from fusecli.errors import FuseError
from fusecli.io.common import FrameInfo, check_dimensions, exposure_mode, parse_exif_datetime, positive

CANONICAL = ("R", "G1", "G2", "B")
CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")


@dataclass(frozen=True)
class CameraInfo:
    """What a DNG writer needs to describe the sensor again. Per-channel values are in R, G1, G2, B
    order; ``color_matrix`` maps XYZ to camera RGB (DNG ColorMatrix, row-major 3x3)."""

    make: str
    model: str
    cfa: str  # colours of the visible area's top-left 2x2, row-major, e.g. "RGGB"
    black_level: tuple[float, float, float, float]
    white_level: float
    white_balance: tuple[float, float, float]  # camera multipliers R, G, B, normalised to G = 1
    color_matrix: tuple[float, ...] | None
    orientation: int = 1
    unique_model: str | None = None  # DNG UniqueCameraModel of the source, when it is a DNG
    illuminant: int | None = None  # EXIF LightSource code the colour matrix was calibrated for
    # a DNG source's own colour calibration, kept as it was: (tag name, rational numbers) pairs of
    # ColorMatrix2, CalibrationIlluminant2, ForwardMatrix1 and ForwardMatrix2 where it has them
    dng_colour: tuple[tuple[str, tuple], ...] = ()


def cfa_offsets(cfa: str) -> list[tuple[int, int]]:
    """(row, column) inside the 2x2 tile of R, G1, G2, B for a pattern such as "GRBG"."""
    cfa = cfa.upper()
    if cfa not in CFA_PATTERNS:
        raise ValueError(f"CFA pattern must be one of {', '.join(CFA_PATTERNS)}, got {cfa!r}")
    pos = {cfa[i]: (i // 2, i % 2) for i in range(4) if cfa[i] != "G"}
    r_row, b_row = pos["R"][0], pos["B"][0]
    greens = [(i // 2, i % 2) for i in range(4) if cfa[i] == "G"]
    g1 = next(g for g in greens if g[0] == r_row)
    g2 = next(g for g in greens if g[0] == b_row)
    return [pos["R"], g1, g2, pos["B"]]


def pack_bayer(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Bayer mosaic (H, W) -> planes (4, H//2, W//2) in R, G1, G2, B order (same dtype, a copy)."""
    h2, w2 = mosaic.shape[0] // 2, mosaic.shape[1] // 2
    return np.stack([mosaic[dy : 2 * h2 : 2, dx : 2 * w2 : 2] for dy, dx in cfa_offsets(cfa)])


def unpack_bayer(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Planes (4, h, w) in R, G1, G2, B order -> Bayer mosaic (2h, 2w) with the given phase."""
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError(f"expected planes of shape (4, h, w), got {planes.shape}")
    _, h, w = planes.shape
    mosaic = np.empty((2 * h, 2 * w), dtype=planes.dtype)
    for plane, (dy, dx) in zip(planes, cfa_offsets(cfa)):
        mosaic[dy::2, dx::2] = plane
    return mosaic


def _open(path: Path, unpack: bool) -> rawpy.RawPy:
    raw = rawpy.RawPy()
    try:
        try:
            name = str(path).encode()  # LibRaw takes UTF-8 names
        except UnicodeEncodeError:  # a name that is not UTF-8: hand LibRaw the bytes instead
            name = None
        if name is None:
            raw.open_buffer(io.BytesIO(Path(path).read_bytes()))
        else:
            raw.open_file(str(path))
        if unpack:
            raw.unpack()
    except rawpy.LibRawFileUnsupportedError:
        raw.close()
        raise FuseError(f"{path}: not a RAW file LibRaw can read") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as e:
        raw.close()
        raise FuseError(f"{path}: truncated, corrupt or not a RAW file ({_msg(e)})") from None
    except rawpy.LibRawError as e:
        raw.close()
        raise FuseError(f"{path}: LibRaw cannot decode it ({_msg(e)})") from None
    return raw


def _msg(e: Exception) -> str:
    text = e.args[0] if e.args else str(e)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _cfa(raw: rawpy.RawPy, path: Path) -> str:
    if raw.raw_type != rawpy.RawType.Flat:
        raise FuseError(
            f"{path}: not a Bayer sensor (LibRaw raw type {raw.raw_type.name}: Foveon or linear DNG); fusecli "
            "reads Bayer RAW only"
        )
    pattern = raw.raw_pattern
    if pattern is None or pattern.shape != (2, 2):
        shape = "none" if pattern is None else f"{pattern.shape[0]}x{pattern.shape[1]}"
        raise FuseError(
            f"{path}: not a Bayer sensor (colour filter pattern {shape}, e.g. X-Trans); fusecli reads Bayer RAW only"
        )
    desc = raw.color_desc.decode(errors="replace")
    top, left = raw.sizes.top_margin, raw.sizes.left_margin
    cfa = "".join(desc[raw.raw_color(top + dy, left + dx)] for dy in (0, 1) for dx in (0, 1))
    if cfa not in CFA_PATTERNS:
        raise FuseError(f"{path}: unsupported colour filter pattern {cfa!r} (fusecli reads RGB Bayer sensors)")
    return cfa


def _tiff_metadata(path: Path) -> dict:
    """EXIF and DNG tags of a TIFF-based RAW, or {} when tifffile cannot parse the file."""
    try:
        with tifffile.TiffFile(path) as tf:
            tags = {t.name: t.value for t in tf.pages[0].tags.values()}
    except Exception:  # not TIFF-based (CR3, RAF, ...) or unusual: LibRaw's values are used
        return {}
    exif = tags.get("ExifTag") or {}
    out = {
        "exposure_time": exif.get("ExposureTime", tags.get("ExposureTime")),
        "aperture": exif.get("FNumber", tags.get("FNumber")),
        "iso": exif.get("ISOSpeedRatings", tags.get("ISOSpeedRatings")),
        "timestamp": exif.get("DateTimeOriginal") or tags.get("DateTime"),
        "orientation": tags.get("Orientation"),
        "make": tags.get("Make"),
        "model": tags.get("Model"),
    }
    out["exposure_mode"] = exif.get("ExposureMode")
    if isinstance(out["iso"], (tuple, list)):
        out["iso"] = out["iso"][0] if out["iso"] else None
    # DNG colour: prefer the matrix calibrated for D65 (illuminant 21), else ColorMatrix2, else 1.
    matrices = [
        (tags.get("CalibrationIlluminant1"), tags.get("ColorMatrix1")),
        (tags.get("CalibrationIlluminant2"), tags.get("ColorMatrix2")),
    ]
    matrices = [(ill, _ratios(m, 9)) for ill, m in matrices]
    matrices = [(ill, m) for ill, m in matrices if m is not None]  # a matrix with a zero denominator is no matrix
    if matrices:
        ill, m = next(((i, m) for i, m in matrices if i == 21), matrices[-1])
        out["color_matrix"] = m
        out["illuminant"] = int(ill) if ill else None
    extra = []
    for name in ("ColorMatrix2", "CalibrationIlluminant2", "ForwardMatrix1", "ForwardMatrix2"):
        value = tags.get(name)
        if isinstance(value, (tuple, list)) and _ratios(value, 9) is not None:
            extra.append((name, tuple(value)))
        elif isinstance(value, int):
            extra.append((name, (value,)))
    out["dng_colour"] = tuple(extra)
    if tags.get("UniqueCameraModel"):
        out["unique_model"] = str(tags["UniqueCameraModel"]).strip()
    neutral = _ratios(tags.get("AsShotNeutral"), 3)
    if neutral is not None:
        out["as_shot_neutral"] = neutral
    return out


def _ratios(values, n: int) -> tuple[float, ...] | None:
    """A TIFF RATIONAL/SRATIONAL array of ``n`` values (2n integers) -> the n numbers, or None when it
    is missing, of another length, or has a zero denominator (a broken file's tag)."""
    if values is None or not isinstance(values, (tuple, list)) or len(values) != 2 * n:
        return None
    if any(not isinstance(v, (int, float)) for v in values) or any(values[2 * i + 1] == 0 for i in range(n)):
        return None
    return tuple(values[2 * i] / values[2 * i + 1] for i in range(n))


_TIFF_BASED = {
    ".dng",
    ".cr2",
    ".nef",
    ".nrw",
    ".arw",
    ".srf",
    ".sr2",
    ".pef",
    ".erf",
    ".tif",
    ".tiff",
    ".3fr",
    ".dcr",
    ".kdc",
    ".mos",
    ".iiq",
    ".rwl",
}


def _frame_info(raw: rawpy.RawPy, path: Path, meta: dict) -> FrameInfo:
    """Frame metadata from LibRaw's sizes (no unpack needed) and the EXIF read by tifffile.

    rawpy unpacks the whole mosaic before it answers any other property (``other``, black levels,
    the CFA pattern...), so LibRaw's exposure values are asked for only for RAWs that are not
    TIFF-based (CR3, RAF, RW2, ORF...), whose EXIF tifffile cannot read.
    """
    sizes = raw.sizes
    check_dimensions(path, sizes.width, sizes.height)
    other = None

    def pick(key: str, field: str) -> float | None:  # EXIF when tifffile parsed it, else LibRaw
        nonlocal other
        if meta:  # LibRaw reads the same EXIF: a missing tag stays missing
            return positive(meta.get(key))
        if other is None:
            other = raw.other
        return positive(getattr(other, field))

    exposure = pick("exposure_time", "shutter_speed")
    iso = pick("iso", "iso_speed")
    aperture = pick("aperture", "aperture")
    timestamp = parse_exif_datetime(meta.get("timestamp"))
    if timestamp is None and other is not None and other.timestamp and other.timestamp > datetime(1971, 1, 1):
        timestamp = other.timestamp
    make = (meta.get("make") or "").strip()
    model = (meta.get("model") or "").strip()
    camera = (model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()) or None
    return FrameInfo(
        path=path,
        width=sizes.width // 2,
        height=sizes.height // 2,
        channels=4,
        kind="raw",
        exposure_time=exposure,
        iso=iso,
        aperture=aperture,
        timestamp=timestamp,
        camera=camera,
        auto_bracket=exposure_mode(meta.get("exposure_mode")),
    )


def _sensor(raw: rawpy.RawPy, path: Path, meta: dict) -> CameraInfo:
    """The sensor description of an unpacked RAW (refuses non-Bayer sensors)."""
    cfa = _cfa(raw, path)
    offsets = cfa_offsets(cfa)
    pattern = raw.raw_pattern
    black_by_colour = raw.black_level_per_channel
    black = tuple(float(black_by_colour[pattern[dy, dx]]) for dy, dx in offsets)
    wb = raw.camera_whitebalance
    if "as_shot_neutral" in meta and all(v > 0 for v in meta["as_shot_neutral"]):
        n = meta["as_shot_neutral"]
        wb_rgb = (n[1] / n[0], 1.0, n[1] / n[2])
    elif wb[1] > 0 and wb[0] > 0 and wb[2] > 0:
        wb_rgb = (wb[0] / wb[1], 1.0, wb[2] / wb[1])
    else:
        wb_rgb = (1.0, 1.0, 1.0)
    matrix = meta.get("color_matrix")
    if matrix is None and np.any(raw.rgb_xyz_matrix[:3]):
        matrix = tuple(float(v) for v in raw.rgb_xyz_matrix[:3].ravel())
    camera = CameraInfo(
        make=(meta.get("make") or "unknown").strip(),
        model=(meta.get("model") or "camera").strip(),
        cfa=cfa,
        black_level=black,  # type: ignore[arg-type]
        white_level=float(raw.white_level),
        white_balance=wb_rgb,
        color_matrix=matrix,
        orientation=int(meta.get("orientation") or 1),
        unique_model=meta.get("unique_model"),
        illuminant=meta.get("illuminant") if meta.get("color_matrix") is not None else None,
        dng_colour=meta.get("dng_colour", ()) if meta.get("illuminant") is not None else (),
    )
    if any(camera.white_level <= b for b in black):
        raise FuseError(f"{path}: white level {camera.white_level:g} is not above the black level {max(black):g}")
    return camera


def _metadata(path: Path) -> dict:
    return _tiff_metadata(path) if path.suffix.lower() in _TIFF_BASED else {}


def probe_raw(path: Path) -> FrameInfo:
    """A RAW file's frame metadata without decoding its pixels (for TIFF-based RAWs: DNG, CR2, NEF,
    ARW...; other formats need LibRaw's unpack to report their exposure)."""
    raw = _open(path, unpack=False)
    try:
        return _frame_info(raw, path, _metadata(path))
    finally:
        raw.close()


def preview(path: Path, side: int) -> np.ndarray | None:
    """A small grey picture of a RAW file, to compare scenes -> (h, w) float32 display-referred
    [0, 1], its long side about ``side`` or more: the embedded JPEG preview where the file has one (the
    mosaic is not decoded), else the mosaic's 2x2 tiles sampled, black and white levels applied, and
    the sRGB curve. None when neither can be read."""
    from fusecli.develop import linear_to_srgb  # (develop imports this module: imported when used)
    from fusecli.io.common import jpeg_grey

    try:
        raw = _open(path, unpack=False)
    except FuseError:
        return None
    try:
        try:
            thumb = raw.extract_thumb()
        except rawpy.LibRawError:
            thumb = None
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            grey = jpeg_grey(bytes(thumb.data), side)
            if grey is not None and min(grey.shape) >= 8:
                return grey
        elif thumb is not None and thumb.format == rawpy.ThumbFormat.BITMAP and thumb.data.ndim == 3:
            return thumb.data.mean(axis=2, dtype=np.float32) / np.float32(255)
        try:
            raw.unpack()
            visible = raw.raw_image_visible
            black, white = float(np.mean(raw.black_level_per_channel)), float(raw.white_level)
        except rawpy.LibRawError:
            return None
        step = max(2, 2 * (max(visible.shape) // (2 * side)))
        tiles = [visible[dy::step, dx::step].astype(np.float32) for dy in (0, 1) for dx in (0, 1)]
        h, w = min(t.shape[0] for t in tiles), min(t.shape[1] for t in tiles)
        mean = sum(t[:h, :w] for t in tiles) / 4
        return linear_to_srgb((mean - black) / max(white - black, 1.0))
    finally:
        raw.close()


def read_camera(path: Path) -> CameraInfo:
    """The sensor description of a RAW file (CFA, levels, white balance, colour matrix)."""
    raw = _open(path, unpack=True)
    try:
        return _sensor(raw, path, _metadata(path))
    finally:
        raw.close()


#: Packed rows normalised at a time: the mosaic's band and the planes' rows stay in the caches through
#: the subtract, scale and clip (bench/bench_read.py measures it).
BAND_ROWS = 16


def normalise_planes(mosaic: np.ndarray, camera: CameraInfo, planes: np.ndarray) -> None:
    """The visible mosaic (2H, 2W) uint16 -> ``planes`` (4, H, W) float32 in [0, 1]: each CFA site less
    its black level, over white - black, clipped. In bands of :data:`BAND_ROWS` rows, every plane's
    rows from one band of the mosaic (arithmetic in place, cheaper than a 64 Ki-entry lookup table)."""
    h2, w2 = planes.shape[1:]
    sites = [
        (dy, dx, np.float32(b), np.float32(1.0 / (camera.white_level - b)))
        for (dy, dx), b in zip(cfa_offsets(camera.cfa), camera.black_level)
    ]
    for y in range(0, h2, BAND_ROWS):
        band = mosaic[2 * y : 2 * min(h2, y + BAND_ROWS)]
        for i, (dy, dx, black, scale) in enumerate(sites):
            rows = planes[i, y : y + BAND_ROWS]
            np.subtract(band[dy::2, dx : 2 * w2 : 2], black, out=rows, casting="unsafe")
            rows *= scale
            np.clip(rows, 0.0, 1.0, out=rows)


def read_raw(path: Path, out: np.ndarray | None = None) -> tuple[np.ndarray, FrameInfo, CameraInfo]:
    """Decode a Bayer RAW file into packed planes (4, H//2, W//2) float32 in [0, 1], R G1 G2 B order.

    ``out``, when given, is a float32 array of that shape that receives the planes (no extra copy).
    """
    raw = _open(path, unpack=True)
    try:
        meta = _metadata(path)
        info, camera = _frame_info(raw, path, meta), _sensor(raw, path, meta)
        visible = raw.raw_image_visible
        h2, w2 = visible.shape[0] // 2, visible.shape[1] // 2
        if out is not None and (out.shape != (4, h2, w2) or out.dtype != np.float32):
            raise FuseError(f"{path}: decoded planes (4, {h2}, {w2}) differ from the stack's {tuple(out.shape)}")
        planes = out if out is not None else np.empty((4, h2, w2), dtype=np.float32)
        normalise_planes(visible, camera, planes)
        return planes, info, camera
    finally:
        raw.close()
