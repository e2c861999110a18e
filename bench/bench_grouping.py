"""Grouping a card: how well the structure score tells one scene from another on real brackets, and
what reading the previews costs.

    python bench/bench_grouping.py [--brackets ../shared/data/brackets] [--repeat 5]

Within: for every frame of the 23 real brackets (in capture order), its best structure against the
frames before it in its bracket, as grouping compares them (fusecli.grouping.structure on
fusecli.grouping.thumbnail). Across: frames of two different brackets, four random pairs per pair of
brackets. A frame is split off as another scene below fusecli.grouping.OTHER_SCENE where at least
TELLING_SHARE of the pixels are well exposed in both; joined from SAME_SCENE. Cost: the preview of the
largest real JPEG there, and of a synthesised 24 MP DNG with a 1024 px embedded preview (as cameras store
one) and without one (the mosaic is read), medians of --repeat.

Results: bench/results/grouping.json.
"""

import argparse
import itertools
import tempfile
from pathlib import Path

import common
import numpy as np

from fusecli import grouping
from fusecli.io.dng import write_dng
from fusecli.io.image import probe
from fusecli.io.metadata import Capture
from fusecli.io.raw import CameraInfo, probe_raw


def _thumbs(brackets: Path) -> dict[str, list]:
    out = {}
    for folder in sorted(p for p in brackets.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
        infos = [probe(f)[0] for f in files]
        if infos and all(i.timestamp for i in infos):
            infos.sort(key=lambda i: i.timestamp)
        out[folder.name] = [grouping.thumbnail(i) for i in infos]
    return out


def separation(brackets: Path) -> dict:
    thumbs = _thumbs(brackets)
    within, unmeasured = [], 0
    for name, ts in thumbs.items():
        for i in range(1, len(ts)):
            scores = [grouping.structure(ts[j], ts[i]).score for j in range(i)]
            scores = [s for s in scores if s is not None]
            if scores:
                within.append((max(scores), name))
            else:
                unmeasured += 1
    rng = np.random.default_rng(0)
    across = []
    for a, b in itertools.combinations(thumbs, 2):
        for _ in range(4):
            i, j = rng.integers(len(thumbs[a])), rng.integers(len(thumbs[b]))
            like = grouping.structure(thumbs[a][i], thumbs[b][j])
            if like.score is not None:
                across.append((like.score, like.share, f"{a} / {b}"))
    split = [w for w in within if w[0] < grouping.OTHER_SCENE]
    told = [c for c in across if c[0] < grouping.OTHER_SCENE and c[1] >= grouping.TELLING_SHARE]
    joined = [c for c in across if c[0] >= grouping.SAME_SCENE]
    return {
        "within_pairs": len(within) + unmeasured,
        "within_unmeasured": unmeasured,
        "within_lowest": sorted(within)[:3],
        "within_split_as_another_scene": len(split),
        "across_pairs": len(across),
        "across_highest": sorted(across)[-3:],
        "across_told_apart": len(told),
        "across_joined_as_one_scene": len(joined),
    }


def cost(brackets: Path, repeat: int) -> dict:
    jpeg = max(brackets.rglob("*.jpg"), key=lambda p: p.stat().st_size)
    info = probe(jpeg)[0]
    out = {"jpeg_megapixels": info.width * info.height / 1e6}
    out["jpeg_s"] = common.median_seconds(lambda: grouping.thumbnail(info), repeat)
    h, w = 4000, 6000
    mosaic = np.random.default_rng(0).integers(2048, 16000, (h, w)).astype(np.uint16)
    cam = CameraInfo("fusecli", "bench", "RGGB", (2048.0,) * 4, 16383.0, (2.0, 1.0, 1.5), None)
    preview = np.random.default_rng(1).integers(0, 255, (683, 1024, 3)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for name, shown in (("dng_with_preview_s", preview), ("dng_without_preview_s", None)):
            path = Path(tmp) / f"{name}.dng"
            write_dng(path, mosaic, cam, Capture.shot(time=1 / 100), preview=shown)
            raw = probe_raw(path)
            out[name] = common.median_seconds(lambda raw=raw: grouping.thumbnail(raw), repeat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brackets", type=Path, default=common.BRACKETS)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    common.need(a.brackets, "this benchmark")
    print(common.describe())
    sep = separation(a.brackets)
    spent = cost(a.brackets, a.repeat)
    for key, value in {**sep, **spent}.items():
        print(f"{key:<32}{value}")
    common.record(
        "grouping",
        {**sep, **spent, "thresholds": {"other_scene": grouping.OTHER_SCENE, "same_scene": grouping.SAME_SCENE}},
        [
            common.headline(
                "real brackets' frames split off their own bracket as another scene",
                f"{sep['within_split_as_another_scene']}/{sep['within_pairs']}",
                "",
                target="0",
                met=sep["within_split_as_another_scene"] == 0,
            ),
            common.headline(
                "frames of two different real brackets told apart (joined as one scene)",
                f"{sep['across_told_apart']}/{sep['across_pairs']} ({sep['across_joined_as_one_scene']})",
                "",
            ),
            common.headline(
                "preview of a 24 MP RAW for grouping, with an embedded preview",
                round(spent["dng_with_preview_s"] * 1000, 1),
                "ms",
                target="<= 50 ms",
                met=spent["dng_with_preview_s"] <= 0.05,
            ),
        ],
    )


if __name__ == "__main__":
    main()
