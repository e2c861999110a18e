"""A raw bracket's range, as a photographer checks it: what the default (scene-linear, floating-point)
DNG and the EXR hold against the scenes the brackets were made from, what a raw developer shows when
the DNG is pulled down, the colour of the TIFF renditions against darktable's, and the DNG's size
against HDRMerge's.

    python bench/bench_raw_range.py

1. The six held-out radiance maps (models/default.toml, data.val_radiance), each as a 4-frame RAW
   bracket 6 stops deep (ratios 1, 1/4, 1/16, 1/64; 30-50 % of the brightest frame clipped), fused
   to DNG and EXR with --align none (a tripod): the median |log error| of the DNG's CFA values where
   the scene lies 1.5-50x above the brightest frame's white (after one global scale), photosites
   clipped in the DNG that the darkest frame held, the EXR's per-channel error on 4x4 block means;
   and the same merge weighted by the network's weights, against the plain merge.
2. The real Canon DNG (../shared/data/real) as a 3-frame bracket (its sensor data x16, x4, x1): the
   same figures; through RawTherapee (when installed) at -3 EV, the window behind the chart in the
   linear DNG, the tone-fused one (--dng fused) and the darkest frame at +1 EV: their highlight
   contrast (p95/p5 of the window's brightness) and docs/raw_range.jpg showing the three; through
   darktable-cli (when installed), the neutral patches of the fused TIFF against darktable's default
   rendering of the same linear DNG: CIELAB delta E at equal lightness (the TIFF is tone-fused, so
   only colour compares); HDRMerge's (when installed) 16-bit DNG of the same bracket, for size.

Results: bench/results/raw_range.json.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import cv2
import numpy as np
import rawpy
import tifffile
import tomllib
import torch

sys.path.insert(0, str(common.ROOT / "tests"))
from conftest import write_bracket_files  # noqa: E402

from fusecli.cli import app  # noqa: E402
from fusecli.discover import discover  # noqa: E402
from fusecli.fuse import fuse_stack  # noqa: E402
from fusecli.io.image import read_radiance  # noqa: E402
from fusecli.io.raw import pack_bayer, read_camera  # noqa: E402
from fusecli.merge import merge_linear  # noqa: E402
from fusecli.model import load_model  # noqa: E402
from fusecli.stack import StackOptions, open_stack  # noqa: E402
from fusecli.synth import SynthConfig, render_bracket, write_bracket  # noqa: E402

HELD_OUT = [  # the maps the bundled model never saw: its recipe's validation maps
    Path(p).relative_to("../shared/data/radiance").as_posix()
    for p in tomllib.loads((common.ROOT / "models" / "default.toml").read_text())["data"]["val_radiance"]
]
RATIOS = (1.0, 0.25, 0.0625, 0.015625)
CANON = common.SHARED / "real" / "raw_single_canon_eos_kiss_x4_magiclantern_dng" / "colorchart.dng"
WINDOW = (slice(40, 640), slice(40, 420))  # rows, columns of the window behind the chart (1156 x 1734)
NEUTRALS = [705, 815, 925, 1035, 1145]  # column centres of the chart's grey row (white to dark grey), row 920


def log_error(values: np.ndarray, scene: np.ndarray, low: float = 1.5, high: float = 50.0) -> float:
    hi = (scene >= low) & (scene <= high)
    diff = np.log(np.maximum(values[hi], 1e-9)) - np.log(scene[hi])
    return float(np.median(np.abs(diff - np.median(diff))))


def fuse(folder: Path, out: Path, *args: str) -> None:
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["fuse", str(folder), "-o", str(out), "--quiet", *args])
    if r.exit_code != 0:
        sys.exit(f"fusecli fuse {folder} failed: {r.stderr}")


def read_linear_dng(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tf:
        return pack_bayer(tf.pages[0].asarray().astype(np.float32), "RGGB")


def held_out(tmp: Path, model) -> list[dict]:
    rows = []
    for i, name in enumerate(HELD_OUT):
        cfg = SynthConfig(width=512, height=256, ratios=RATIOS, clip_share=(0.3, 0.5), cfa="RGGB")
        bracket = render_bracket(read_radiance(common.SHARED / "radiance" / name), cfg, np.random.default_rng(i))
        folder = tmp / f"map_{i}"
        write_bracket(folder, bracket)
        fuse(folder, tmp / "out", "--format", "dng", "--align", "none")
        planes = read_linear_dng(tmp / "out" / f"map_{i}_fused.dng")
        black, white = bracket.params["black"], bracket.params["white"]
        darkest = (pack_bayer(bracket.mosaics[-1], "RGGB").astype(np.float32) - black) / (white - black)
        stack = open_stack(discover([folder])[0], StackOptions(align="none", deghost=False))
        _, weights = fuse_stack(model, stack, torch.device("cpu"))
        weighted, _ = merge_linear(stack.frames, stack.ratios, weights=weights)
        rows.append(
            {
                "map": name,
                "dng_log_error": round(log_error(planes / RATIOS[-1], bracket.scene), 4),
                "network_weighted_log_error": round(log_error(weighted, bracket.scene), 4),
                "clipped_but_held": int(np.count_nonzero((planes >= 1.0) & (darkest < 0.99))),
                "photosites": int(planes.size),
            }
        )
        print(f"{name:<55}{rows[-1]['dng_log_error']:>8.4f}{rows[-1]['network_weighted_log_error']:>10.4f}")
    return rows


def rawtherapee(dng: Path, out: Path, ev: float) -> np.ndarray:
    profile = out.with_suffix(".pp3")
    profile.write_text(f"[Exposure]\nCompensation={ev}\n")
    subprocess.run(
        ["rawtherapee-cli", "-o", str(out), "-b16", "-t", "-Y", "-p", str(profile), "-c", str(dng)],
        capture_output=True,
        check=True,
    )
    return tifffile.imread(out).astype(np.float32) / 65535


def neutral_delta_e(picture: np.ndarray, reference: np.ndarray) -> list[float]:
    """CIELAB delta E of the grey patches, ``picture`` scaled to ``reference``'s luminance first."""

    def linear(x):
        return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)

    def lab(rgb):
        enc = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * rgb ** (1 / 2.4) - 0.055)
        return cv2.cvtColor(enc[None].astype(np.float32), cv2.COLOR_RGB2Lab)[0]

    y = np.array([0.2126, 0.7152, 0.0722])
    out = []
    for x in NEUTRALS:
        a, b = (
            linear(img[895:945, x - 25 : x + 25].reshape(-1, 3).mean(0).astype(np.float64))
            for img in (picture, reference)
        )
        a = a * (b @ y) / (a @ y)
        out.append(round(float(np.linalg.norm(lab(a[None]) - lab(b[None]))), 3))
    return out


def canon(tmp: Path) -> dict:
    with rawpy.imread(str(CANON)) as raw:
        mosaic = raw.raw_image_visible[:1156, :1734].astype(np.float64)
    cam = read_camera(CANON)
    scene = (mosaic - 2056) / (15000 - 2056) * 16
    folder = tmp / "canon"
    write_bracket_files(folder, scene, [1, 0.25, 0.0625], cam=cam, times=[1 / 25, 1 / 100, 1 / 400])
    fuse(folder, tmp / "linear", "--format", "dng,tiff")
    fuse(folder, tmp / "fused", "--format", "dng", "--dng", "fused")
    planes = read_linear_dng(tmp / "linear" / "canon_fused.dng")
    packed = pack_bayer(scene, cam.cfa)
    found = {
        "dng_log_error": round(log_error(planes * 16, packed, 1.5, 15.0), 4),
        "clipped_but_held": int(np.count_nonzero((planes >= 1.0) & (packed / 16 < 0.99))),
        "dng_bytes": (tmp / "linear" / "canon_fused.dng").stat().st_size,
    }
    if shutil.which("rawtherapee-cli"):
        shown = {
            "darkest frame +1 EV": rawtherapee(folder / "IMG_0003.dng", tmp / "darkest.tif", 1),
            "linear DNG -3 EV": rawtherapee(tmp / "linear" / "canon_fused.dng", tmp / "linear.tif", -3),
            "tone-fused DNG -3 EV": rawtherapee(tmp / "fused" / "canon_fused.dng", tmp / "fused.tif", -3),
        }
        crops = {k: v[WINDOW] for k, v in shown.items()}
        found["window_contrast_rawtherapee"] = {
            k: round(float(np.percentile(c.mean(-1), 95) / np.percentile(c.mean(-1), 5)), 2) for k, c in crops.items()
        }
        strip = np.concatenate([np.pad(c, ((0, 0), (0, 8), (0, 0)), constant_values=1) for c in crops.values()], axis=1)
        cv2.imwrite(
            str(common.ROOT / "docs" / "raw_range.jpg"),
            (strip[..., ::-1] * 255).round().astype(np.uint8),
            [cv2.IMWRITE_JPEG_QUALITY, 90],
        )
        print("window contrast (RawTherapee):", found["window_contrast_rawtherapee"], "-> docs/raw_range.jpg")
    if shutil.which("darktable-cli"):
        reference = tmp / "darktable.tif"
        subprocess.run(
            [
                "darktable-cli",
                str(tmp / "linear" / "canon_fused.dng"),
                str(reference),
                "--core",
                "--conf",
                "plugins/imageio/format/tiff/bpp=16",
            ],
            capture_output=True,
            check=True,
        )
        dt = tifffile.imread(reference).astype(np.float64) / 65535
        ours = tifffile.imread(tmp / "linear" / "canon_fused.tif").astype(np.float64) / 65535
        found["neutral_delta_e_vs_darktable"] = neutral_delta_e(ours, dt)
        print("neutral patches, delta E at equal lightness vs darktable:", found["neutral_delta_e_vs_darktable"])
    if shutil.which("hdrmerge"):
        out = tmp / "hdrmerge.dng"
        subprocess.run(
            ["hdrmerge", "-b", "16", "-o", str(out), *map(str, sorted(folder.glob("*.dng")))],
            env={**common.USER_ENV, "QT_QPA_PLATFORM": "offscreen"},
            capture_output=True,
            check=True,
        )
        found["hdrmerge_dng_bytes"] = out.stat().st_size
        print(f"DNG size: fusecli {found['dng_bytes']} bytes, HDRMerge (16-bit) {found['hdrmerge_dng_bytes']} bytes")
    return found


def main() -> None:
    common.need(common.SHARED / "radiance", "the radiance maps of ../shared/data/radiance")
    common.need(CANON, "the real Canon DNG of ../shared/data/real")
    print(common.describe())
    model = load_model(None, torch.device("cpu"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'held-out map':<55}{'DNG':>8}{'weighted':>10}   (median |log error|, highlights 1.5-50x)")
        maps = held_out(Path(tmp), model)
        real = canon(Path(tmp))
    worst = max(r["dng_log_error"] for r in maps)
    clipped = sum(r["clipped_but_held"] for r in maps) + real["clipped_but_held"]
    headlines = [
        common.headline(
            "linear DNG: worst median log error of 6 held-out maps' highlights 1.5-50x white",
            worst,
            "",
            target="<= 0.05",
            met=worst <= 0.05,
        ),
        common.headline(
            "linear DNG: photosites clipped that the darkest frame held (6 maps + Canon)",
            clipped,
            "",
            target="0",
            met=clipped == 0,
        ),
    ]
    if "neutral_delta_e_vs_darktable" in real:
        de = max(real["neutral_delta_e_vs_darktable"])
        headlines.append(common.headline("RAW TIFF neutral patches vs darktable, worst delta E", de, ""))
    if "hdrmerge_dng_bytes" in real:
        ratio = real["dng_bytes"] / real["hdrmerge_dng_bytes"]
        headlines.append(
            common.headline(
                "linear DNG size vs HDRMerge 16-bit, Canon bracket",
                round(ratio, 2),
                "x",
                target="<= 1x",
                met=ratio <= 1,
            )
        )
    common.record("raw_range", {"held_out": maps, "canon": real}, headlines)


if __name__ == "__main__":
    main()
