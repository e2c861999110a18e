"""The model against the classical tools on labelled stacks synthesised from held-out radiance maps.

    python bench/compare_baselines.py [--model PATH] [--pred DIR ...] [--stacks out/heldout]

The stacks (written once to --stacks, then reused) come from the 6 radiance maps that training
holds out (models/default.toml, val_radiance) and Cannon.exr, none ever trained on, with seeds that
neither training (0) nor validation (10000) use: packed-RAW brackets (DNG, the seed's 1, 1/4, 1/16,
with its label) and display-referred brackets (8-bit PNG frames around a normal exposure, 3 and 5
frames, camera tone curves, JPEG, ratio errors; label tone-mapped at the normal exposure). Every
method is scored as `fusecli eval` scores it (fusecli.evaluate): PSNR and SSIM of the
display-referred images against the label developed the same way (display_psnr, display_ssim),
in the stack's own domain where the method gives one (psnr, ssim), and MEF-SSIM. Methods: the model,
"prior" (the same network untrained: its correction is zero, so it is exposure fusion's hand-made
weights through the same blend; what the learned correction adds is the difference), OpenCV's
MergeMertens and enfuse as their users run them (developed 8-bit / 16-bit frames), the best single
exposure, and any --pred folder (another tool's or model's outputs).

Results: bench/results/baselines.json.
"""

import argparse
import statistics
from pathlib import Path

import common
import tomllib
import torch

from fusecli.discover import discover
from fusecli.evaluate import EvalOptions, evaluate_sources, method_names
from fusecli.losses import LossConfig
from fusecli.model import FuseNet, load_model
from fusecli.stack import StackOptions
from fusecli.synth import DisplayConfig, SynthConfig, synthesise

ROOT = common.ROOT
CANNON = common.SHARED / "real/hdr_radiance_openexr_cannon/Cannon.exr"
KEYS = ("display_psnr", "display_ssim", "psnr", "ssim", "mef_ssim")


def held_out_maps() -> list[Path]:
    """The maps the default recipe validates on, and Cannon.exr (the samples' source): none trained on."""
    recipe = tomllib.loads((ROOT / "models" / "default.toml").read_text())
    return [ROOT / p for p in recipe["data"]["val_radiance"]] + [CANNON]


def write_stacks(folder: Path, seed: int) -> None:
    maps = [p for p in held_out_maps() if p.exists()]
    common.need(CANNON, "this comparison")
    synthesise(maps, folder / "raw", stacks_per_map=2, cfg=SynthConfig(width=384, height=256), seed=seed)
    hdr = [p for p in maps if p.suffix == ".hdr"]
    for path in synthesise(
        hdr, folder / "display3", stacks_per_map=2, seed=seed, display=DisplayConfig(size=384, frames=3)
    ):
        path.rename(path.with_name(path.name + "_k3"))  # stack names unique across kinds (prediction files)
    for path in synthesise(
        hdr, folder / "display5", stacks_per_map=1, seed=seed + 1, display=DisplayConfig(size=384, frames=5)
    ):
        path.rename(path.with_name(path.name + "_k5"))  # stack names unique across kinds (prediction files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the bundled one)")
    ap.add_argument("--pred", type=Path, nargs="*", default=[], help="folders of other tools' outputs")
    ap.add_argument("--stacks", type=Path, default=ROOT / "out" / "heldout")
    ap.add_argument("--seed", type=int, default=20000)
    a = ap.parse_args()
    print(common.describe())
    if not (a.stacks / "raw").is_dir():
        write_stacks(a.stacks, a.seed)
    model, sidecar = load_model(a.model)
    loss = LossConfig.from_dict(sidecar.get("loss", {}))
    options = EvalOptions(("model", "mertens", "enfuse", "single"), tuple(a.pred), StackOptions(align="none"))
    names = method_names(options)
    names.insert(1, "prior")
    prior = FuseNet(model.config).eval()  # output layers start at zero: no correction
    table = {}
    for kind in ("raw", "display3", "display5"):
        sources = discover([a.stacks / kind])
        rows = evaluate_sources(sources, model, torch.device("cpu"), loss_config=loss, options=options)
        prior_rows = evaluate_sources(
            sources, prior, torch.device("cpu"), loss_config=loss, options=EvalOptions(("model",), (), options.stack)
        )
        rows += [{**r, "method": "prior"} for r in prior_rows]
        table[kind] = {"stacks": len(sources)}
        print(f"\n{kind}: {len(sources)} held-out labelled stacks, mean over stacks")
        print(f"{'method':<14}" + "".join(f"{k:>14}" for k in KEYS))
        for method in names:
            mine = [r for r in rows if r["method"] == method and r["status"] == "ok"]
            cells = "".join(
                f"{statistics.fmean(r[k] for r in mine):>14.4f}" if mine and mine[0][k] is not None else f"{'-':>14}"
                for k in KEYS
            )
            failed = sum(r["method"] == method and r["status"] != "ok" for r in rows)
            print(f"{method:<14}{cells}" + (f"  ({failed} failed)" if failed else ""))
            table[kind][method] = {
                k: statistics.fmean(r[k] for r in mine) if mine and mine[0][k] is not None else None for k in KEYS
            }
            table[kind][method]["failed"] = failed
    raw, shown = table["raw"], table["display3"]
    common.record(
        "baselines",
        {"methods": names, "kinds": table},
        [
            common.headline(
                f"display PSNR on {raw['stacks']} held-out packed-RAW stacks: model (Mertens)",
                f"{raw['model']['display_psnr']:.2f} ({raw['mertens']['display_psnr']:.2f})",
                "dB",
            ),
            common.headline(
                f"MEF-SSIM on {shown['stacks']} held-out 3-frame display-referred stacks: model (Mertens)",
                f"{shown['model']['mef_ssim']:.4f} ({shown['mertens']['mef_ssim']:.4f})",
                "",
            ),
            common.headline(
                f"display PSNR on {raw['stacks']} held-out packed-RAW stacks: model (its untrained prior)",
                f"{raw['model']['display_psnr']:.2f} ({raw['prior']['display_psnr']:.2f})",
                "dB",
            ),
        ],
    )


if __name__ == "__main__":
    main()
