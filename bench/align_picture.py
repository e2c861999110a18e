"""The README's before/after picture of alignment: one synthesised handheld bracket (Cannon.exr, each
later frame moved by up to 6 mosaic pixels and turned by up to 0.5 degrees) fused by the bundled
model with ``--align none`` and with ``--align homography``, a crop of each side by side, with the
label.

    python bench/align_picture.py [-o docs/align.jpg]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import common
import cv2
import numpy as np
import torch

from fusecli.discover import discover
from fusecli.fuse import fuse_stack
from fusecli.model import load_model
from fusecli.report import display_rgb
from fusecli.stack import load_stack, register
from fusecli.synth import SynthConfig, synthesise

CANNON = Path(__file__).resolve().parents[2] / "shared/data/real/hdr_radiance_openexr_cannon/Cannon.exr"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "align.jpg")
    a = ap.parse_args()
    print(common.describe())
    if not CANNON.exists():
        sys.exit(f"{CANNON} is absent: this picture needs ../shared beside the checkout")
    model = load_model()[0]
    with tempfile.TemporaryDirectory() as tmp:
        synthesise([CANNON], Path(tmp), cfg=SynthConfig(width=1024, height=768, shift=6.0, rotate=0.5), seed=31)
        source = discover([Path(tmp)])[0]
        tiles = []
        for mode in ("none", "homography"):
            stack = register(load_stack(source), mode, True)
            fused, _ = fuse_stack(model, stack, torch.device("cpu"))
            tiles.append((display_rgb(fused, stack), f"--align {mode}"))
        tiles.append((display_rgb(stack.read_label(), stack), "label"))
    crops = []
    for image, caption in tiles:
        h, w = image.shape[:2]
        crop = image[h // 4 : h // 4 + 160, w // 3 : w // 3 + 200]
        crop = cv2.resize(crop, (400, 320), interpolation=cv2.INTER_NEAREST)  # 2x: the double edges show
        tile = np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8)[..., ::-1].copy()
        cv2.putText(tile, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        crops.append(tile)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(a.out), np.hstack(crops), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
