"""fusecli eval: numbers equal the loss and metric functions, perfect predictions, baselines, other
tools' outputs, thresholds, machine-readable output, reports and bad input."""

import csv
import io
import json
import shutil

import cv2
import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from fusecli.baselines import best_exposed
from fusecli.cli import app
from fusecli.discover import discover
from fusecli.evaluate import METRICS, mef_scorer, mef_size, mef_ssim_display
from fusecli.fuse import fuse_stack
from fusecli.io.image import write_label
from fusecli.losses import LossConfig, black_reg, grad_sign, gradient_l1, high_smooth, l1, luma_grad
from fusecli.metrics import PSNR_CAP_DB, mef_ssim, psnr, ssim
from fusecli.model import load_model
from fusecli.runtime import pick_device
from fusecli.stack import load_stack
from fusecli.synth import SynthConfig, synthesise

runner = CliRunner()
ROW_KEYS = {"stack", "method", "status", "labelled", "reason", "seconds", *METRICS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two labelled procedural stacks, 128x96 mosaics (64x48 packed planes), 3 frames."""
    root = tmp_path_factory.mktemp("evalset")
    synthesise([], root / "data", procedural=2, cfg=SynthConfig(width=128, height=96), seed=5)
    return root / "data"


def _eval(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def test_json_numbers_equal_the_loss_and_metric_functions(dataset):
    r = _eval(dataset, "--json", "--method", "model,mertens,single")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)  # stdout holds the JSON and nothing else
    assert set(out) == {"schema", "model", "loss", "total", "methods", "rows", "aggregate", "thresholds", "failed"}
    assert out["schema"] == 1
    assert out["methods"] == ["model", "mertens", "single"] and out["failed"] == 0
    assert len(out["rows"]) == 6 and all(set(row) == ROW_KEYS for row in out["rows"])
    assert all(set(a) == {"method", "stat", "stacks", "labelled", *METRICS} for a in out["aggregate"])

    device = pick_device("auto")  # the device the command used (on CUDA the network runs in float16)
    model, sidecar = load_model(None, device)
    cfg = LossConfig.from_dict(sidecar["loss"])
    source = discover([dataset])[0]
    stack = load_stack(source)
    fused, weights = fuse_stack(model, stack, device)
    y, label = torch.from_numpy(fused)[None], torch.from_numpy(stack.read_label())[None]
    frames, w = torch.from_numpy(stack.frames)[None], torch.from_numpy(weights)[None]
    expected = {
        "l1": l1(y, label),
        "gradient_l1": gradient_l1(y, label),
        "grad_sign": grad_sign(y, label),
        "high_smooth": high_smooth(y, label, cfg.h_th),
        "luma_grad": luma_grad(y, frames[:, 0]),
        "black_reg": black_reg(w, frames, label, threshold=cfg.black_threshold, kernel=cfg.black_kernel),
        "psnr": psnr(y, label),
        "ssim": ssim(y, label),
    }
    # display-referred: developed as fuse develops its TIFF/JPEG outputs, then PSNR/SSIM and MEF-SSIM
    from fusecli.develop import display

    def shown(chw):
        return torch.from_numpy(np.moveaxis(display(chw, stack), -1, 0))[None]

    frames_d = torch.stack([shown(f)[0] for f in stack.frames])[None]
    expected["display_psnr"] = psnr(shown(fused), shown(stack.read_label()))
    expected["display_ssim"] = ssim(shown(fused), shown(stack.read_label()))
    expected["mef_ssim"] = mef_ssim(frames_d.double(), shown(fused).double(), levels=1)
    grey = (shown(fused)[0] * torch.tensor([0.2989, 0.5870, 0.1140])[:, None, None]).sum(0)  # Rec.601 luma
    expected["global_contrast"] = grey.std(unbiased=False)  # the stack is 192x256: at most 256 px already
    expected = {k: float(v) for k, v in expected.items()}
    expected["total"] = (
        expected["l1"]
        + expected["gradient_l1"]
        + cfg.gamma * expected["grad_sign"]
        + cfg.eta * expected["high_smooth"]
        + cfg.lambda_luma * expected["luma_grad"]
    )
    row = next(x for x in out["rows"] if x["stack"] == source.name and x["method"] == "model")
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key

    # Baselines have no weights: black_reg is absent for them. Mertens runs as its users run it, on
    # developed 8-bit RGB: it has display-referred figures only (no packed-RAW result to compare).
    display_metrics = {"display_psnr", "display_ssim", "mef_ssim", "global_contrast"}
    for x in out["rows"]:
        assert x["status"] == "ok" and x["labelled"] is True
        assert (x["black_reg"] is None) == (x["method"] != "model")
        present = display_metrics if x["method"] == "mertens" else set(METRICS) - {"black_reg"}
        assert all(np.isfinite(x[m]) for m in present)
        assert all(x[m] is None for m in set(METRICS) - present - {"black_reg"})
    # The aggregate is the mean and median of the rows.
    mean = next(a for a in out["aggregate"] if a["method"] == "mertens" and a["stat"] == "mean")
    values = [x["display_psnr"] for x in out["rows"] if x["method"] == "mertens"]
    assert mean["stacks"] == 2 and mean["display_psnr"] == pytest.approx(np.mean(values))
    # The trained model beats both classical baselines on these held-out stacks, as a viewer sees them.
    means = {a["method"]: a for a in out["aggregate"] if a["stat"] == "mean"}
    assert means["model"]["display_psnr"] > means["single"]["display_psnr"]
    assert means["model"]["display_psnr"] > means["mertens"]["display_psnr"]


def test_perfect_prediction_scores_zero_loss_and_capped_psnr(dataset, tmp_path):
    preds = tmp_path / "labels"
    preds.mkdir()
    for folder in dataset.iterdir():
        shutil.copy(folder / "label.tif", preds / f"{folder.name}.tif")
    r = _eval(dataset, "--method", "", "--pred", preds, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [x["method"] for x in rows] == ["labels", "labels"]
    for x in rows:
        assert x["l1"] == 0 and x["gradient_l1"] == 0 and x["high_smooth"] == 0
        assert x["psnr"] == PSNR_CAP_DB and x["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_pred_scores_fusecli_fuse_outputs_like_the_model(dataset, tmp_path):
    fused = tmp_path / "fusecli-dng"
    assert runner.invoke(app, ["fuse", str(dataset), "-o", str(fused), "--dng", "fused", "--quiet"]).exit_code == 0
    r = _eval(dataset, "--method", "model", "--pred", fused, "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    for name in {x["stack"] for x in rows}:
        model, pred = (
            next(x for x in rows if x["stack"] == name and x["method"] == m) for m in ("model", "fusecli-dng")
        )
        assert pred["psnr"] == pytest.approx(model["psnr"], abs=0.05)  # 16-bit DNG quantisation only
        assert pred["black_reg"] is None


def test_fail_under_and_fail_over_exit_codes(dataset):
    assert _eval(dataset, "--fail-under", "psnr=10,ssim=0.5", "--quiet").exit_code == 0
    missed = _eval(dataset, "--fail-under", "psnr=99", "--json")
    assert missed.exit_code == 3
    [check] = json.loads(missed.stdout)["thresholds"]
    assert check["metric"] == "psnr" and check["passed"] is False and check["value"] < 99
    assert _eval(dataset, "--fail-over", "l1=0.5").exit_code == 0
    assert _eval(dataset, "--fail-over", "l1=0.0001").exit_code == 3
    bad = _eval(dataset, "--fail-under", "sharpness=3")
    assert bad.exit_code == 2 and "METRIC=VALUE" in bad.stderr  # a usage error


def test_csv_is_one_tidy_row_per_stack_and_method_matching_the_json(dataset):
    as_json = json.loads(_eval(dataset, "--json", "--method", "model,single").stdout)
    r = _eval(dataset, "--csv", "--method", "model,single")
    assert r.exit_code == 0
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(table) == len(as_json["rows"]) == 4  # 2 stacks x 2 methods, no aggregate rows
    assert list(table[0])[:5] == ["stack", "method", "status", "labelled", "reason"]
    for t, row in zip(table, as_json["rows"]):
        assert (t["stack"], t["method"]) == (row["stack"], row["method"])
        for m in METRICS:
            assert (t[m] == "") if row[m] is None else float(t[m]) == row[m], m


def test_report_writes_contact_sheets_and_a_summary(dataset, tmp_path):
    r = _eval(dataset, "--method", "model,mertens", "--report", tmp_path / "report", "--quiet")
    assert r.exit_code == 0, r.stderr
    sheets = sorted((tmp_path / "report").glob("procedural_*.png"))
    assert len(sheets) == 2
    sheet = cv2.imread(str(sheets[0]))
    # 4 columns (3 frames + label) of 256-px tiles, 3 rows (frames, model, mertens) of 192 + 20 px
    # (64x48 packed planes shown at 256x192, with a caption strip), 4-px gaps.
    assert sheet.shape == (3 * (192 + 20) + 4 * 4, 4 * 256 + 5 * 4, 3)
    plot = cv2.imread(str(tmp_path / "report" / "summary.png"))
    assert plot is not None and plot.shape[1] > 600


def test_bad_label_missing_pred_and_unlabelled_stack_are_reported_per_stack(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    first, second = sorted(p for p in data.iterdir() if p.is_dir())
    write_label(first / "label.tif", np.zeros((4, 10, 10), np.float32))  # wrong size
    extra = tmp_path / "nolabel" / "x"
    shutil.copytree(second, extra)
    (extra / "label.tif").unlink()
    preds = tmp_path / "other"
    preds.mkdir()
    shutil.copy(second / "label.tif", preds / f"{second.name}.tif")  # a prediction for one stack only
    r = _eval(data, tmp_path / "nolabel", "--pred", preds, "--json")
    assert r.exit_code == 1
    rows = {(x["stack"], x["method"]): x for x in json.loads(r.stdout)["rows"]}
    bad = rows[(first.name, "model")]
    assert bad["status"] == "failed" and "label.tif" in bad["reason"] and "does not match" in bad["reason"]
    assert rows[(second.name, "model")]["status"] == "ok" and rows[(second.name, "other")]["l1"] == 0
    missing = rows[("x", "other")]
    assert missing["status"] == "failed" and "no prediction for stack x" in missing["reason"]
    unlabelled = rows[("x", "model")]
    assert unlabelled["status"] == "ok" and unlabelled["labelled"] is False
    assert unlabelled["mef_ssim"] > 0 and unlabelled["global_contrast"] > 0
    assert all(unlabelled[m] is None for m in METRICS if m not in ("mef_ssim", "global_contrast"))
    assert "does not match" in r.stderr  # progress and reasons go to stderr, JSON alone to stdout


def test_usage_errors(dataset, tmp_path):
    bad = _eval(dataset, "--method", "hdrmerge")
    assert bad.exit_code == 2 and "mertens" in bad.stderr  # a usage error that lists the choices
    assert _eval(dataset, "--json", "--csv").exit_code == 2
    r = _eval(dataset, "--pred", tmp_path / "absent")
    assert r.exit_code == 1 and "not a folder" in r.stderr


def test_table_for_people(dataset):
    r = _eval(dataset, "--method", "model,uniform", "--per-stack")
    assert r.exit_code == 0
    means = {
        a["method"]: a
        for a in json.loads(_eval(dataset, "--method", "model,uniform", "--json").stdout)["aggregate"]
        if a["stat"] == "mean"
    }
    assert "2 stacks, 2 labelled: mean (median)" in r.stdout and "psnr ↑" in r.stdout
    assert f"{means['model']['psnr']:.2f}" in r.stdout and f"{means['uniform']['ssim']:.4f}" in r.stdout
    assert "total = l1 + gradient_l1 + 40*grad_sign" in r.stdout


def test_best_exposed_and_mef_size():
    frames = np.zeros((3, 1, 4, 4), np.float32)
    frames[0] = 1.0  # clipped everywhere
    frames[1, :, :2] = 0.5  # half well exposed
    frames[2] = 0.3  # all well exposed
    assert best_exposed(frames) == 2
    assert mef_size(1200, 1600) == (1024, 768) and mef_size(2016, 1512) == (768, 1024)
    assert mef_size(300, 400) == (400, 300)  # smaller images are scored as they are


def test_mef_ssim_at_a_chosen_side():
    """The default scores at MEF_SIDE; a larger side scores the images as they are, where fine detail
    the downscale hid counts: a frame with noise added scores lower at full size."""
    g = np.random.default_rng(0)
    base = np.clip(cv2.GaussianBlur(g.random((60, 2048, 3), dtype=np.float32), (0, 0), 4) * 2 - 0.5, 0, 1)
    frames = np.stack([np.clip(base * 1.6, 0, 1), base, base * 0.5])
    noisy = np.clip(base + g.normal(0, 0.05, base.shape).astype(np.float32), 0, 1)
    default, full = mef_scorer(frames), mef_scorer(frames, side=4096)
    assert default.shape[-2:] == (30, 1024) and full.shape[-2:] == (60, 2048)
    assert mef_ssim_display(full, noisy, side=4096) < mef_ssim_display(default, noisy) - 0.02


@pytest.mark.skipif(shutil.which("enfuse") is None, reason="enfuse is not installed (Debian: apt-get install enfuse)")
def test_pred_reads_enfuse_results_as_enfuse_writes_them(tmp_path):
    """enfuse writes LZW-compressed 16-bit TIFFs with an alpha channel: --pred reads them (alpha
    dropped, the stack's sRGB encoding) and scores them as the built-in enfuse method scores its own."""
    import subprocess

    import cv2

    scene = cv2.resize(np.random.default_rng(2).uniform(0.01, 1.0, (8, 8, 3)).astype(np.float32), (96, 96)) ** 3 * 20
    cv2.imwrite(str(tmp_path / "scene.hdr"), scene[..., ::-1])
    stacks = tmp_path / "stacks"
    r = runner.invoke(app, ["synth", str(tmp_path / "scene.hdr"), "--display", "--size", "64x64", "-o", str(stacks)])
    assert r.exit_code == 0, r.stderr
    [folder] = list(stacks.iterdir())
    preds = tmp_path / "by_hand"
    preds.mkdir()
    frames = sorted(str(p) for p in folder.glob("frame_*.png"))
    subprocess.run(["enfuse", "-o", str(preds / f"{folder.name}.tif"), *frames], check=True, capture_output=True)
    with tifffile.TiffFile(preds / f"{folder.name}.tif") as tf:
        assert tf.pages[0].compression == 5 and tf.pages[0].shape[-1] == 4  # LZW, RGBA
    r = _eval(stacks, "--method", "enfuse", "--pred", preds, "--json")
    assert r.exit_code == 0, r.stderr
    rows = {x["method"]: x for x in json.loads(r.stdout)["rows"]}
    assert rows["by_hand"]["display_psnr"] == pytest.approx(rows["enfuse"]["display_psnr"], abs=0.5)
