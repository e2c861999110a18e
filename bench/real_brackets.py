"""fusecli against the classical tools on real photographs nobody here made: MEF-SSIM per stack.

    python bench/real_brackets.py [--brackets ../shared/data/brackets] [--model PATH ...] [--no-correction]
                                  [--display-correction S ...]
                                  [--align none] [--mef-side 1024] [--sheets out/real_brackets] [--only NAME ...]

Every stack of the folder (23 real brackets shot by people with phones and cameras) is fused by:
fusecli as `fusecli fuse` runs it (the bundled model and the default alignment unless told
otherwise), OpenCV's MergeMertens on the 8-bit frames with its defaults (as its users run it),
Debian's `enfuse` with its defaults on 16-bit TIFFs of the same frames (skipped with a message when
it is not installed), and the best single exposure (the frame with the most pixels neither clipped
nor in the noise floor). Each result is scored with MEF-SSIM (Ma, Zeng, Wang 2015: single scale,
11x11 Gaussian window sigma 1.5, C2 = 0.03^2) on the Rec.601 luma of the display-referred images
(the values as stored) downscaled with area interpolation to a longest side of 1024 px (--mef-side;
0 scores them as they are, fine detail included): the same for every method
(fusecli.evaluate.mef_scorer). --no-correction adds a column for the bundled model's fusion with its
learned correction at zero: exposure fusion's weights in fusecli's pyramid; --display-correction
S ... a column per strength of the correction camera-JPEG stacks get (the sidecar's
display_correction, 0.5 for the bundled model). A contact sheet per
stack (frames; fusecli, Mertens, enfuse; fusecli's weights) goes to --sheets: look at them before
believing a number. Beside MEF-SSIM, each result's global contrast (fusecli.metrics.global_contrast:
the spread of its brightness at 256 px; a flat "HDR look" scores low) and whether it is brighter on
average than the brightest frame (a night turned to day). The brackets are split by name into a
tuning half (the 1st, 3rd, 5th... in sorted order), on which fusecli's fusion may be tuned, and a
held-out half that is only reported: both are printed and recorded apart.

Results: bench/results/real_brackets[_side<N>][_<label>].json (--label names a variant run).
"""

import argparse
import dataclasses
import hashlib
import statistics
import time
from pathlib import Path

import common
import cv2
import numpy as np
import torch

from fusecli.baselines import best_exposed, enfuse_display, mertens_display
from fusecli.develop import display, weight_map
from fusecli.discover import discover
from fusecli.errors import FuseError
from fusecli.evaluate import contrast_display, mef_scorer, mef_ssim_display
from fusecli.fuse import fuse_stack
from fusecli.model import FuseNet, load_model
from fusecli.stack import StackOptions, open_stack

ROOT = common.ROOT
METHODS = ("fusecli", "mertens", "enfuse", "single")  # fusecli: one column per --model
TILE = 240


def _tile(image: np.ndarray, caption: str, height: int) -> np.ndarray:
    """(H, W, 3|1) [0, 1] -> (height + 18, TILE, 3) uint8 with a caption strip."""
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    small = cv2.resize(image.astype(np.float32), (TILE, height), interpolation=cv2.INTER_AREA)
    out = np.full((height + 18, TILE, 3), 24, np.uint8)
    out[18:] = np.round(np.clip(small, 0, 1) * 255).astype(np.uint8)
    cv2.putText(out, caption[:38], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(frames: np.ndarray, results: dict, scores: dict, weights: np.ndarray | None) -> np.ndarray:
    """Row 1: the frames; row 2: every method's result with its MEF-SSIM, then fusecli's weights."""
    h, w = frames.shape[1:3]
    th = max(1, round(TILE * h / w))
    top = [_tile(f, f"frame {k + 1}", th) for k, f in enumerate(frames)]
    bottom = [_tile(img, f"{m} {scores[m]:.4f}", th) for m, img in results.items()]
    if weights is not None:
        bottom.append(_tile(weights.astype(np.float32) / 255, "fusecli weights", th))
    cols = max(len(top), len(bottom))
    rows = [r + [np.full_like(top[0], 24)] * (cols - len(r)) for r in (top, bottom)]
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


def _label(path: Path | None) -> str:
    """A model's column: "fusecli" for the bundled one, else its file's folder/name."""
    return "fusecli" if path is None else f"{path.parent.name}/{path.stem}"


def split(names) -> dict[str, list[str]]:
    """The tuning half (every other bracket in sorted order, from the first) and the held-out half."""
    ordered = sorted(names)
    return {"tuning": ordered[0::2], "held out": ordered[1::2]}


def parts(table: dict, contrasts: dict, brighter: dict, methods: tuple, first: str) -> dict:
    """Per part of :func:`split`: each method's mean MEF-SSIM and contrast, the first model's wins
    over Mertens, and the stacks where it is brighter than the brightest frame."""
    out = {}
    for part, names in split(table).items():
        rows = [table[n] for n in names]
        mean = {m: statistics.fmean(v) for m in methods if (v := [r[m] for r in rows if r[m] is not None])}
        contrast = {
            m: statistics.fmean(v) for m in methods if (v := [contrasts[n][m] for n in names if m in contrasts[n]])
        }
        pairs = [(r[first], r["mertens"]) for r in rows if r[first] is not None and r["mertens"] is not None]
        out[part] = {
            "stacks": names,
            "mef_ssim": mean,
            "global_contrast": contrast,
            "wins_over_mertens": [sum(f > m for f, m in pairs), len(pairs)],
            "brighter_than_brightest_frame": [n for n in names if brighter[n].get(first)],
        }
        print(
            f"{part}: MEF-SSIM "
            + ", ".join(f"{m} {v:.4f}" for m, v in mean.items())
            + "; contrast "
            + ", ".join(f"{m} {v:.3f}" for m, v in contrast.items())
            + f"; {first} beats Mertens on {out[part]['wins_over_mertens'][0]}/{len(pairs)}"
        )
    return out


def summarise(table: dict, contrasts: dict, brighter: dict, methods: tuple, *, models: list[str], a) -> None:
    """Print each method's mean and how often each model beats the others; record them."""
    scored = {m: [r[m] for r in table.values() if r[m] is not None] for m in methods}
    means = {m: statistics.fmean(v) if v else None for m, v in scored.items()}
    print(f"{'mean':<31}" + "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in means.values()))
    contrast = {m: statistics.fmean(v) for m in methods if (v := [c[m] for c in contrasts.values() if m in c])}
    print(f"{'global contrast, mean':<31}" + "".join(f"{contrast.get(m, float('nan')):>10.4f}" for m in methods))
    print("stacks fused: " + ", ".join(f"{m} {len(scored[m])}/{len(table)}" for m in methods))
    wins = {}
    for name in models:
        for other in ("mertens", "enfuse", "single"):
            pairs = [(r[name], r[other]) for r in table.values() if r[name] is not None and r[other] is not None]
            if pairs:
                wins[f"{name} > {other}"] = [sum(f > o for f, o in pairs), len(pairs)]
                print(f"{name} better than {other} on {wins[f'{name} > {other}'][0]} of {len(pairs)} stacks")
    side = f"{a.mef_side} px" if a.mef_side else "the images' own size"
    first = models[0]
    others = ", ".join(f"{means[m]:.4f}" if means[m] is not None else "-" for m in METHODS[1:])
    headlines = [
        common.headline(
            f"MEF-SSIM on {len(table)} real brackets at {side}, mean: {first} (Mertens, enfuse, best single)",
            f"{means[first]:.4f} ({others})",
            "",
            target=">= Mertens",
            met=means["mertens"] is not None and means[first] >= means["mertens"],
        )
    ]
    if f"{first} > mertens" in wins:
        better, total = wins[f"{first} > mertens"]
        headlines.append(
            common.headline(f"real brackets where {first} beats Mertens at {side}", f"{better}/{total}", "")
        )
    name = "real_brackets" + ("" if a.mef_side == 1024 else f"_side{a.mef_side}") + (f"_{a.label}" if a.label else "")
    first_contrast, mertens_contrast = contrast.get(first), contrast.get("mertens")
    if first_contrast is not None and mertens_contrast is not None:
        headlines.append(
            common.headline(
                f"global contrast on {len(table)} real brackets, mean: {first} (Mertens)",
                f"{first_contrast:.3f} ({mertens_contrast:.3f})",
                "",
                target=">= Mertens",
                met=first_contrast >= mertens_contrast,
            )
        )
    halves = parts(table, contrasts, brighter, methods, first)
    held = halves["held out"]
    headlines.append(
        common.headline(
            f"held-out half ({len(held['stacks'])} brackets): {first} MEF-SSIM (Mertens), wins over Mertens",
            f"{held['mef_ssim'].get(first, float('nan')):.4f} ({held['mef_ssim'].get('mertens', float('nan')):.4f}), "
            f"{held['wins_over_mertens'][0]}/{held['wins_over_mertens'][1]}",
            "",
        )
    )
    figures = {"mef_side": a.mef_side, "align": a.align, "methods": list(methods), "stacks": table}
    figures.update(global_contrast=contrasts, brighter_than_brightest_frame=brighter, contrast_means=contrast)
    common.record(name, {**figures, "means": means, "wins": wins, "halves": halves}, headlines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brackets", type=Path, nargs="+", default=[common.BRACKETS], help="folders of stacks")
    ap.add_argument("--model", type=Path, nargs="*", default=[None], help="model file(s) (default: the bundled one)")
    ap.add_argument("--no-correction", action="store_true", help="also fuse with the learned correction at zero")
    ap.add_argument(
        "--display-correction",
        type=float,
        nargs="*",
        default=[],
        help="also fuse with the bundled model at these display_correction strengths (0..1)",
    )
    ap.add_argument("--mef-side", type=int, default=1024, help="longest side scored (0: as they are)")
    ap.add_argument("--align", default="translation", help="fusecli's --align (default: fuse's default)")
    ap.add_argument("--sheets", type=Path, default=ROOT / "out" / "real_brackets")
    ap.add_argument("--only", nargs="*", default=None, help="stack names to run (default: all)")
    ap.add_argument("--docs", type=Path, default=None, help="also write the sheets, one above the other, as this JPEG")
    ap.add_argument("--label", default=None, help="a variant's name in its results file (default: none)")
    a = ap.parse_args()
    for path in a.brackets:
        common.need(path, "this benchmark")
    print(common.describe())
    print("MEF-SSIM at " + (f"a longest side of {a.mef_side} px" if a.mef_side else "the images' own size"))
    models = {_label(p): load_model(p)[0] for p in a.model}
    if a.no_correction:  # a fresh network's last layers are zero: its correction is nothing
        models["no-corr"] = FuseNet(load_model()[0].config).eval()
    for strength in a.display_correction:  # the bundled weights, its sidecar's strength replaced
        model = load_model()[0]
        model.config = dataclasses.replace(model.config, display_correction=strength)
        models[f"corr{strength:g}"] = model
    side = a.mef_side or 1 << 30
    methods = (*models, *METHODS[1:])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    options = StackOptions(align=a.align)
    a.sheets.mkdir(parents=True, exist_ok=True)
    table: dict[str, dict[str, float | None]] = {}
    contrasts: dict[str, dict[str, float]] = {}  # per stack and method
    brighter: dict[str, dict[str, bool]] = {}  # per stack and method: brighter on average than the brightest frame
    print(f"{'stack':<28}{'K':>3}" + "".join(f"{m[-9:]:>10}" for m in methods) + f"{'s fusecli':>11}")
    sheets = []
    for source in discover(a.brackets):
        if a.only and source.name not in a.only:
            continue
        row: dict[str, float | None] = dict.fromkeys(methods)
        try:
            stack = open_stack(source, options)
        except FuseError as e:
            print(f"{source.name:<28}  not opened: {e}")
            table[source.name] = row
            contrasts[source.name], brighter[source.name] = {}, {}
            continue
        frames = np.stack([display(f, stack) for f in stack.frames])
        scorer = mef_scorer(frames, side)
        results: dict[str, np.ndarray] = {}
        shown_weights = None
        for name, model in models.items():
            t0 = time.perf_counter()
            fused, weights = fuse_stack(model, stack, device)
            seconds = time.perf_counter() - t0
            results[name] = display(fused, stack)
            shown_weights = weight_map(weights) if shown_weights is None else shown_weights
        results["mertens"] = mertens_display(frames)
        cached = a.sheets / "enfuse-cache" / f"{source.name}-{hashlib.sha1(frames.tobytes()).hexdigest()[:12]}.npy"
        try:
            if cached.is_file():  # enfuse's result depends on the frames only: computed once per frames
                results["enfuse"] = np.load(cached)
            else:
                results["enfuse"] = enfuse_display(frames)
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, results["enfuse"])
        except FuseError as e:
            print(f"  enfuse skipped: {e}")
        results["single"] = frames[best_exposed(stack.frames)]
        for method, image in results.items():
            row[method] = mef_ssim_display(scorer, image, side)
        table[source.name] = row
        contrasts[source.name] = {m: round(contrast_display(img), 4) for m, img in results.items()}
        brighter[source.name] = {m: bool(img.mean() > frames[0].mean()) for m, img in results.items()}
        sheet = contact_sheet(frames, results, row, shown_weights)
        sheets.append(sheet)
        cv2.imwrite(str(a.sheets / f"{source.name}.png"), sheet[..., ::-1])
        cells = "".join(f"{row[m]:>10.4f}" if row[m] is not None else f"{'-':>10}" for m in methods)
        print(f"{source.name:<28}{len(stack.frames):>3}{cells}{seconds:>11.2f}", flush=True)
    summarise(table, contrasts, brighter, methods, models=list(models), a=a)
    print(f"contact sheets: {a.sheets}")
    if a.docs is not None and sheets:
        width = max(s.shape[1] for s in sheets)
        padded = [np.pad(s, ((0, 8), (0, width - s.shape[1]), (0, 0)), constant_values=24) for s in sheets]
        cv2.imwrite(str(a.docs), np.concatenate(padded)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"docs sheet: {a.docs}")


if __name__ == "__main__":
    main()
