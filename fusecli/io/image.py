"""TIFF (tifffile), PNG/JPEG (OpenCV, EXIF and profiles through Pillow), labels and radiance maps
(.exr, .hdr).

Every frame comes out as float32 (C, H, W), linear light, in [0, 1], upright (EXIF orientation
applied). Its colour space (:func:`frame_space`) comes from the file: its ICC profile (matrix/TRC,
:mod:`fusecli.io.icc`), a PNG's sRGB or gAMA chunk, or EXIF's ColorSpace (sRGB, or Adobe RGB by its
interoperability index); a file that says nothing is sRGB when it holds integers and linear sRGB
when it holds floats. ``transfer="srgb"`` or ``"linear"`` overrides the file. A stack's frames are
converted into the colour space of its first frame (:func:`read_frame`'s ``target``), which its
outputs are encoded in and tagged with.

Float TIFF frames holding NaN or Inf are refused (with the count), never silently sanitised;
values above 1 are clipped (a frame is an exposure: it cannot hold more than full scale).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from fusecli.choices import Transfer
from fusecli.develop import orient, srgb_to_linear
from fusecli.errors import FuseError
from fusecli.io import icc
from fusecli.io.common import (
    MAX_PIXELS,
    PICTURE_EXTENSIONS,
    TIFF_EXTENSIONS,
    FrameInfo,
    check_dimensions,
    exposure_mode,
    parse_exif_datetime,
    positive,
)

_EXIF_IFD, _INTEROP_IFD = 0x8769, 0xA005
_EXPOSURE_TIME, _FNUMBER, _ISO, _DATETIME_ORIGINAL, _EXPOSURE_MODE = 33434, 33437, 34855, 36867, 41986
_MAKE, _MODEL, _ORIENTATION, _DATETIME, _COLOR_SPACE = 271, 272, 274, 306, 40961


@lru_cache(maxsize=8)
def _lut(bits: int, curve: icc.Curve) -> np.ndarray:
    """Linear light of every code of ``bits`` through ``curve`` (the sRGB curve exactly as
    :func:`fusecli.develop.srgb_to_linear` gives it)."""
    codes = np.arange(2**bits, dtype=np.float32) / (2**bits - 1)
    return srgb_to_linear(codes) if curve == icc.SRGB_CURVE else curve.to_linear(codes)


@lru_cache(maxsize=32)
def _parse(profile: bytes) -> icc.ColourSpace | None:
    space = icc.parse(profile)
    return icc.srgb() if space is not None and space.is_srgb else space


def _declared_space(
    profile: bytes | None, exif_colour: int | None, interop: str | None, png: dict
) -> icc.ColourSpace | None:
    """The colour space a file declares: its ICC profile (matrix/TRC), a PNG's sRGB or gAMA chunk,
    EXIF ColorSpace 1 (sRGB) or 'uncalibrated' with interoperability index R03 (Adobe RGB); None
    where it declares none (or a profile fusecli cannot read: the default then applies)."""
    if profile:
        return _parse(bytes(profile))
    if "srgb" in png:
        return icc.srgb()
    if png.get("gamma"):
        return icc.srgb().with_curve(
            icc.Curve("gamma", (1 / float(png["gamma"]),)), f"gamma {1 / float(png['gamma']):.2f}"
        )
    if exif_colour == 1:
        return icc.srgb()
    if exif_colour == 0xFFFF and (interop or "").strip("\0 ") == "R03":
        return icc.adobe_rgb()
    return None


def frame_space(info: FrameInfo, transfer: Transfer = "auto") -> icc.ColourSpace:
    """The colour space a frame is decoded from: ``transfer`` "srgb" or "linear" forces sRGB or
    linear sRGB; "auto" takes the file's (:func:`_declared_space`), else sRGB for integer samples
    and linear sRGB for float ones."""
    if transfer == "srgb":
        return icc.srgb()
    if transfer == "linear":
        return icc.linear_srgb()
    if info.space is not None:
        return info.space if info.channels == 3 or info.space.to_xyz is None else icc.srgb()
    return icc.srgb() if info.bit_depth in (8, 16) else icc.linear_srgb()


# --- probing (headers only) ---------------------------------------------------------------------


def probe_picture(path: Path) -> FrameInfo:
    """Header and EXIF of a PNG or JPEG, through Pillow (no pixel decoding)."""
    try:
        with warnings.catch_warnings():  # fusecli applies its own size limit (check_dimensions)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                mode = im.mode
                exif = im.getexif()
                info = dict(im.info)
    except Image.DecompressionBombError as e:
        raise FuseError(
            f"{path}: absurd dimensions ({e.args[0].split(' exceeds')[0]}); fusecli reads frames up to "
            f"{MAX_PIXELS // 1_000_000} MP"
        ) from None
    except UnidentifiedImageError:
        raise FuseError(f"{path}: not an image (no PNG or JPEG decoder recognises it)") from None
    except OSError as e:
        raise FuseError(f"{path}: cannot read the image header ({e})") from None
    if mode == "CMYK":
        raise FuseError(f"{path}: a CMYK image (print colours); fusecli reads RGB and grey: convert it to RGB first")
    grey = ("1", "L", "I;16", "I;16B", "I", "LA", "La", "F")  # (an alpha channel is not image data)
    channels = 1 if mode in grey else 3
    check_dimensions(path, width, height, channels)
    sub = exif.get_ifd(_EXIF_IFD) if exif else {}
    interop = exif.get_ifd(_EXIF_IFD).get(_INTEROP_IFD) if exif else None
    interop_index = exif.get_ifd(_INTEROP_IFD).get(1) if exif and interop else None
    make, model = str(exif.get(_MAKE, "") or "").strip(), str(exif.get(_MODEL, "") or "").strip()
    orientation = _orientation(exif.get(_ORIENTATION))
    if orientation >= 5:  # stored turned a quarter: the upright picture is the other way round
        width, height = height, width
    return FrameInfo(
        path=path,
        width=width,
        height=height,
        channels=channels,
        kind="picture",
        space=_declared_space(info.get("icc_profile"), _int(sub.get(_COLOR_SPACE)), interop_index, info),
        orientation=orientation,
        exposure_time=positive(sub.get(_EXPOSURE_TIME)),
        iso=positive(sub.get(_ISO)),
        aperture=positive(sub.get(_FNUMBER)),
        timestamp=parse_exif_datetime(sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)),
        auto_bracket=exposure_mode(sub.get(_EXPOSURE_MODE)),
        camera=_camera(make, model),
        bit_depth=16 if mode.startswith("I;16") or mode == "I" else 8,
    )


def _int(value) -> int | None:
    try:
        return int(value[0] if isinstance(value, (tuple, list)) else value)
    except (TypeError, ValueError, IndexError):
        return None


def _orientation(value) -> int:
    """EXIF Orientation (1..8; anything else is 1, upright)."""
    found = _int(value)
    return found if found in range(1, 9) else 1


def _camera(make: str, model: str) -> str | None:
    if not make and not model:
        return None
    return model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()


def _page_axes(page: tifffile.TiffPage) -> tuple[int, int, int]:
    """(channels, height, width) of a TIFF page."""
    shape = dict(zip(page.axes, page.shape))
    return shape.get("S", 1), shape.get("Y", 0), shape.get("X", 0)


def probe_tiff(path: Path) -> list[FrameInfo]:
    """Headers of a TIFF: one frame, or one frame per page of a multi-page TIFF (reduced-resolution
    pages such as thumbnails are skipped)."""
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tf:
            pages = [p for p in tf.pages if not p.is_reduced]
            infos = []
            for i, page in enumerate(pages):
                c, h, w = _page_axes(page)
                check_dimensions(path, w, h, c)
                if page.dtype is None or page.dtype.kind not in "uf" or page.dtype.itemsize > 8:
                    raise FuseError(
                        f"{path}: unsupported TIFF sample type {page.dtype} (fusecli reads 8/16-bit integer "
                        "and float TIFF)"
                    )
                if page.dtype.kind == "u" and page.dtype.itemsize > 2:
                    raise FuseError(
                        f"{path}: unsupported TIFF sample type {page.dtype} (fusecli reads 8/16-bit integer "
                        "and float TIFF)"
                    )
                _check_extent(path, page, size, (c, h, w))
                if page.photometric == tifffile.PHOTOMETRIC.SEPARATED:
                    raise FuseError(
                        f"{path}: a CMYK TIFF (print colours); fusecli reads RGB and grey: convert it to RGB first"
                    )
                tags = {t.name: t.value for t in page.tags.values()}
                exif = tags.get("ExifTag") or {}
                make, model = str(tags.get("Make", "") or "").strip(), str(tags.get("Model", "") or "").strip()
                orientation = _orientation(tags.get("Orientation"))
                if orientation >= 5:  # stored turned a quarter: the upright picture is the other way round
                    w, h = h, w
                colour = _int(exif.get("ColorSpace"))
                interop = (exif.get("InteroperabilityTag") or {}).get("InteroperabilityIndex")
                infos.append(
                    FrameInfo(
                        path=path,
                        width=w,
                        height=h,
                        space=_declared_space(tags.get("InterColorProfile"), colour, interop, {}),
                        orientation=orientation,
                        channels=1 if c <= 2 else 3,  # grey (+ alpha) or RGB (+ alpha): alpha is not image data
                        kind="tiff",
                        exposure_time=positive(exif.get("ExposureTime", tags.get("ExposureTime"))),
                        iso=positive(_first(exif.get("ISOSpeedRatings", tags.get("ISOSpeedRatings")))),
                        aperture=positive(exif.get("FNumber", tags.get("FNumber"))),
                        timestamp=parse_exif_datetime(exif.get("DateTimeOriginal") or tags.get("DateTime")),
                        auto_bracket=exposure_mode(exif.get("ExposureMode")),
                        camera=_camera(make, model),
                        page=i if len(pages) > 1 else None,
                        bit_depth=page.dtype.itemsize * 8 if page.dtype.kind == "u" else None,
                    )
                )
    except FuseError:
        raise
    except Exception as e:  # tifffile raises several types for damaged files
        raise FuseError(f"{path}: not a readable TIFF ({e})") from None
    if not infos:
        raise FuseError(f"{path}: the TIFF holds no image")
    return infos


def _check_extent(path: Path, page: tifffile.TiffPage, size: int, chw: tuple[int, int, int]) -> None:
    """Refuse a page whose image data lies past the end of the file, or (uncompressed) is smaller
    than its header's size claims, before anything is allocated for it."""
    c, h, w = chw
    need = c * h * w * page.dtype.itemsize
    offsets, counts = page.dataoffsets, page.databytecounts
    ends = [o + n for o, n in zip(offsets, counts) if n]
    if not ends or max(ends) > size or (page.compression == 1 and sum(counts) < need):
        raise FuseError(
            f"{path}: truncated TIFF: its header claims {w}x{h}x{c} ({need / 2**20:.0f} MiB of image data) "
            f"but the file holds {size} bytes"
        )


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) and value else value


# --- decoding -----------------------------------------------------------------------------------


def _to_chw(array: np.ndarray, channels_last: bool, orientation: int = 1) -> np.ndarray:
    """A decoded array -> (C, H, W), upright: ``orientation`` (EXIF) applied."""
    if array.ndim == 3 and not channels_last:
        array = np.moveaxis(array, 0, -1)
    array = orient(array, orientation)
    if array.ndim == 2:
        return array[None]
    return np.moveaxis(array, -1, 0)


def _normalise(path: Path, array: np.ndarray, space: icc.ColourSpace, out: np.ndarray | None = None) -> np.ndarray:
    """Integer or float (C, H, W) encoded in ``space`` -> float32 linear light [0, 1] (its primaries),
    into ``out`` (C, H, W) float32 when given."""
    if out is None:
        out = np.empty(array.shape, np.float32)
    if len(set(space.curves)) > 1 and array.dtype.kind == "u":  # a curve per channel: channel by channel
        for c in range(array.shape[0]):
            _normalise(path, array[c : c + 1], icc.ColourSpace(space.name, None, (space.curves[c],)), out[c : c + 1])
        return out
    curve = space.curves[0]
    if array.dtype == np.uint8 and out.flags.c_contiguous:  # OpenCV's table lookup, plane by plane
        lut = _lut(8, curve)  # (faster than np.take)
        for c in range(array.shape[0]):
            cv2.LUT(np.ascontiguousarray(array[c]), lut, dst=out[c])
        return out
    if array.dtype in (np.uint8, np.uint16):  # one gather through the code -> linear table
        lut = _lut(8 * array.dtype.itemsize, curve)
        hwc = np.moveaxis(array, 0, -1)
        if array.shape[0] > 1 and hwc.flags.c_contiguous:  # decoded channels last (a TIFF's RGB)
            # gathered in the decoder's order, then transposed from a small band (cheaper than
            # reading the codes three apart)
            band = np.empty((64, *hwc.shape[1:]), np.float32)
            for y in range(0, hwc.shape[0], 64):
                rows = min(64, hwc.shape[0] - y)
                np.take(lut, hwc[y : y + rows], out=band[:rows], mode="clip")
                out[:, y : y + rows] = band[:rows].transpose(2, 0, 1)
            return out
        # in bands of rows: np.take makes an int64 copy of its indices
        for y in range(0, array.shape[1], 256):
            np.take(lut, array[:, y : y + 256], out=out[:, y : y + 256], mode="clip")  # ("clip": unbuffered)
        return out
    if array.dtype.kind == "f":
        out[...] = array
        bad = int(np.count_nonzero(~np.isfinite(out)))
        if bad:
            raise FuseError(f"{path}: {bad} NaN/Inf pixel values; fusecli refuses float frames with non-finite values")
        np.clip(out, 0.0, 1.0, out=out)
        if not space.linear:
            out[...] = space.to_linear(out)
        return out
    raise FuseError(f"{path}: unsupported sample type {array.dtype}")


def read_frame(
    info: FrameInfo,
    transfer: Transfer = "auto",
    out: np.ndarray | None = None,
    target: icc.ColourSpace | None = None,
) -> np.ndarray:
    """Decode one TIFF page or PNG/JPEG frame -> (C, H, W) float32, linear light, [0, 1], upright; C is
    1 or 3. Its colour space is :func:`frame_space`'s; with ``target``, its colours are converted
    into that space's primaries (values outside it clipped). With ``out`` (C, H, W) float32, the
    frame is decoded straight into it (a stack's slot: no copy)."""
    path = info.path
    space = frame_space(info, transfer)
    if info.kind == "tiff":
        try:
            with tifffile.TiffFile(path) as tf:
                page = [p for p in tf.pages if not p.is_reduced][info.page or 0]
                array = page.asarray()
                channels_last = page.axes.endswith("S")
        except Exception as e:
            raise FuseError(f"{path}: cannot decode the TIFF ({e})") from None
        chw = _to_chw(array, channels_last, info.orientation)
    elif info.kind == "picture":
        if path.suffix.lower() in {".jpg", ".jpeg"} and not _jpeg_complete(path):
            raise FuseError(f"{path}: truncated JPEG (no end-of-image marker)")
        array = _imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if array is None:
            raise FuseError(f"{path}: OpenCV cannot decode the image (corrupt or truncated)")
        if array.ndim == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGB if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)
        chw = _to_chw(array, True, info.orientation)
    else:
        raise ValueError(f"read_frame reads TIFF and PNG/JPEG frames, not {info.kind}")
    if chw.shape[0] in (2, 4):  # grey + alpha, RGB + alpha: the alpha channel is not image data
        chw = chw[: chw.shape[0] - 1]
    if chw.shape[0] == 3 and info.channels == 1:  # a grey file that the decoder expanded to RGB
        chw = chw[:1]
    if chw.shape[1:] != (info.height, info.width):
        raise FuseError(
            f"{path}: decoded size {chw.shape[2]}x{chw.shape[1]} differs from its header {info.width}x{info.height}"
        )
    if out is not None and out.shape != chw.shape:
        raise FuseError(f"{path}: decoded shape {chw.shape} differs from the stack's {out.shape}")
    frame = _normalise(path, chw, space, out)
    convert = icc.matrix(space, target) if target is not None and frame.shape[0] == 3 else None
    if convert is not None:  # another profile than the stack's: into its primaries, in bands of rows
        for y in range(0, frame.shape[1], 256):
            band = frame[:, y : y + 256]
            np.clip(np.einsum("ij,jhw->ihw", convert, band), 0.0, 1.0, out=band)
    return frame


def _imread(path: Path, flags: int) -> np.ndarray | None:
    """cv2.imread for any file name (OpenCV cannot open names that are not UTF-8): decode the bytes."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise FuseError(f"{path}: cannot read the file ({e.strerror})") from None
    return cv2.imdecode(data, flags) if data.size else None


def _jpeg_complete(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 4096))
        return b"\xff\xd9" in f.read()


def preview(info: FrameInfo, side: int) -> np.ndarray | None:
    """A small grey display-referred picture of a frame, to compare scenes -> (h, w) float32 [0, 1],
    long side about ``side`` or more: a JPEG decoded at a fraction of its size; other files decoded
    whole (linear, :func:`read_frame`), averaged over channels and sRGB-encoded. None when the frame
    cannot be decoded (it fails with its reason when its bracket is opened)."""
    from fusecli.develop import linear_to_srgb
    from fusecli.io.common import jpeg_grey

    if info.path.suffix.lower() in (".jpg", ".jpeg"):
        return jpeg_grey(info.path, side)
    try:
        frame = read_frame(info)
    except FuseError:
        return None
    grey = frame.mean(axis=0)
    step = max(1, min(grey.shape) // (2 * side))  # area-averaged later; a stride first for large frames
    grey = np.ascontiguousarray(grey[::step, ::step]) if step > 1 else grey
    return linear_to_srgb(grey)


def probe(path: Path) -> list[FrameInfo]:
    """Headers of an image file that is not RAW: one FrameInfo, or one per page of a multi-page TIFF."""
    suffix = path.suffix.lower()
    if suffix in TIFF_EXTENSIONS:
        return probe_tiff(path)
    if suffix in PICTURE_EXTENSIONS:
        return [probe_picture(path)]
    raise FuseError(f"{path}: not a supported image type (expected RAW, TIFF, PNG or JPEG)")


# --- labels and radiance maps -------------------------------------------------------------------


def read_label(path: Path, transfer: Transfer = "auto", what: str = "label") -> np.ndarray:
    """A reference fused image -> (C, H, W) float32, linear, [0, 1].

    Float TIFF/EXR/HDR are linear; integer files follow ``transfer`` as frames do. A packed-RAW
    label is a float32 TIFF with 4 planes (what ``fusecli synth`` writes).
    """
    suffix = path.suffix.lower()
    if suffix in {".exr", ".hdr"}:
        rgb = read_radiance(path)
        return np.ascontiguousarray(np.clip(np.moveaxis(rgb, -1, 0), 0.0, 1.0))
    infos = probe(path)
    if len(infos) != 1:
        raise FuseError(f"{path}: a {what} must be a single image, this file holds {len(infos)} pages")
    info = infos[0]
    if info.kind == "tiff":  # labels may hold 4 packed-RAW planes: keep every channel
        try:
            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                chw = _to_chw(page.asarray(), page.axes.endswith("S"), info.orientation)
        except Exception as e:
            raise FuseError(f"{path}: cannot decode the {what} ({e})") from None
        return np.ascontiguousarray(_normalise(path, chw, frame_space(info, transfer)))
    return read_frame(info, transfer)


def write_label(path: Path, label: np.ndarray) -> None:
    """Write a (C, H, W) float label as a float32, deflate-compressed, planar TIFF (atomically)."""
    from fusecli.io.common import atomic_path

    if label.ndim != 3:
        raise ValueError(f"expected a (C, H, W) label, got {label.shape}")
    with atomic_path(Path(path)) as tmp:
        tifffile.imwrite(
            tmp,
            np.ascontiguousarray(label, dtype=np.float32),
            photometric="minisblack",
            planarconfig="separate",
            compression="zlib",
            metadata=None,
            description="fusecli label: linear, [0, 1], planes in the stack's channel order",
        )


#: Rec. 709 luminance weights: OpenEXR's default chromaticities, used to rebuild G from Y, RY, BY.
_LUMA = (0.2126, 0.7152, 0.0722)


def _exr_rgb(path: Path, channels: dict[str, np.ndarray]) -> np.ndarray:
    """An EXR's channels -> (H, W, 3) RGB, as OpenEXR's RGBA interface reads them: RGB or RGBA (alpha
    dropped), separate R, G, B, luminance/chroma (Y, RY, BY; chroma upsampled to full size) or
    luminance alone (grey)."""
    for key in ("RGB", "RGBA"):
        if key in channels:
            return channels[key][..., :3]
    if all(c in channels for c in "RGB"):
        return np.stack([channels[c] for c in "RGB"], axis=-1)
    if "Y" not in channels:
        raise FuseError(f"{path}: the EXR has no R, G, B or Y channels (it has {', '.join(channels)})")
    y = channels["Y"]
    if "RY" not in channels or "BY" not in channels:
        return np.repeat(y[..., None], 3, axis=-1)
    size = (y.shape[1], y.shape[0])
    ry, by = (cv2.resize(channels[c], size, interpolation=cv2.INTER_LINEAR) for c in ("RY", "BY"))
    r, b = (ry + 1) * y, (by + 1) * y
    g = (y - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
    return np.stack([r, g, b], axis=-1)


def read_radiance(path: Path) -> np.ndarray:
    """A linear HDR radiance map (.exr through OpenEXR, .hdr through OpenCV) -> (H, W, 3) float32 >= 0."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FuseError(f"{path}: no such file")
    if suffix == ".exr":
        import OpenEXR

        try:
            with OpenEXR.File(str(path)) as f:
                rgb = _exr_rgb(path, {k: np.asarray(v.pixels, dtype=np.float32) for k, v in f.channels().items()})
        except FuseError:
            raise
        except Exception as e:
            raise FuseError(f"{path}: not a readable OpenEXR file ({e})") from None
    elif suffix == ".hdr":
        bgr = _imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if bgr is None:
            raise FuseError(f"{path}: not a readable Radiance .hdr file")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    else:
        raise FuseError(f"{path}: not a radiance map (expected .exr or .hdr)")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FuseError(f"{path}: expected an RGB radiance map, got shape {rgb.shape}")
    bad = int(np.count_nonzero(~np.isfinite(rgb)))
    if bad:
        raise FuseError(f"{path}: {bad} NaN/Inf values in the radiance map")
    return np.clip(rgb, 0.0, None)
