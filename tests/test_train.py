"""fusecli train: learning, checkpoints, kill-and-resume equivalence, DDP on 2 gloo processes, the CLI."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, child_env, smooth_scene, tiny_train, write_bracket_files
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.dataset import CropDataset, StepBatches, load_labelled
from fusecli.losses import FusionLoss
from fusecli.model import FuseNet, load_model
from fusecli.train import TrainConfig, apply_overrides, train

SAMPLES = ROOT / "samples"
runner = CliRunner()
TINY = [*tiny_train(12), "--set", "val_every=1000", "--set", "ckpt_every=1"]


def _tiny_config(**kw) -> TrainConfig:
    cfg = TrainConfig()
    sets = ["data.crop=32", "model.width=8", "model.depth=2", "val_every=1000", f"data.datasets=['{SAMPLES}']"]
    sets += [f"{k}={v}" for k, v in kw.items()]
    return apply_overrides(cfg, sets)


def _env() -> dict:
    return child_env(OMP_NUM_THREADS="1")


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    cfg = _tiny_config(steps=60, batch_size=4, **{"optim.lr": 5e-3})
    samples = load_labelled([str(SAMPLES)], None)
    batch = [CropDataset(samples, 32, 123)[i] for i in range(4)]
    frames, ratios, label, _, _ = (torch.stack(t) for t in zip(*batch))
    loss_fn = FusionLoss(cfg.loss)

    def loss_of(model):
        with torch.no_grad():
            fused, weights = model(frames, ratios)
            return loss_fn(fused, label, frames, weights)[0].item()

    torch.manual_seed(cfg.seed)
    before = loss_of(FuseNet(cfg.model).eval())
    train(cfg, tmp_path / "run", export=tmp_path / "model")
    after = loss_of(load_model(tmp_path / "model")[0])
    assert after < 0.85 * before  # from exposure fusion (the untrained network) towards the labels
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 61))
    assert set(records[0]) >= {
        "total",
        "l1",
        "gradient_l1",
        "grad_sign",
        "high_smooth",
        "luma_grad",
        "black_reg",
        "lr",
        "samples_per_s",
    }
    assert "psnr" in records[-1]["val"]  # validation on the held-out stack at the last step


def test_batches_are_a_function_of_the_step_and_rank():
    samples = load_labelled([str(SAMPLES)], None)
    ds = CropDataset(samples, 32, 0)
    assert torch.equal(ds[17][0], ds[17][0]) and not torch.equal(ds[17][0], ds[18][0])
    whole = list(StepBatches(0, 3, 4))
    ranks = [list(StepBatches(0, 3, 2, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == whole


def _weights(run):
    return torch.load(run / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    # on the CPU: bit for bit. (On CUDA, cuDNN's and the atomics' kernels are not deterministic: a resumed
    # run there matched to rounding, not bits, on an H200.)
    cmd = [sys.executable, "-m", "fusecli", "train", str(SAMPLES), *TINY, "--device", "cpu"]
    full = subprocess.run(
        cmd + ["--run-dir", str(tmp_path / "full")], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        cmd + ["--run-dir", str(tmp_path / "killed")], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = tmp_path / "killed" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["step"]
    assert 5 <= step < 12, "the kill should land mid-run"
    resumed = subprocess.run(
        [sys.executable, "-m", "fusecli", "train", "--resume", str(tmp_path / "killed")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fusecli",
        "train",
        str(SAMPLES),
        *TINY[:1],
        "100000",  # far more than can finish before the interrupt, however fast the machine
        *TINY[2:],
        "--run-dir",
        str(tmp_path / "r"),
    ]
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C reaches a program only where SIGINT is not ignored: a shell's background job (as a
        # test run started with `&`) inherits SIG_IGN, and Python then installs no handler at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = tmp_path / "r" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "checkpoint saved, continue with: fusecli train --resume" in err and "Traceback" not in err
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["step"] >= 3


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_matches_one_process_with_the_same_samples(tmp_path):
    # lambda_black = 0: black_reg is a ratio of batch sums, the one term that does not split evenly
    common = [
        str(SAMPLES),
        "--steps",
        "4",
        "--set",
        "data.crop=32",
        "--set",
        "model.width=8",
        "--set",
        "model.depth=2",
        "--set",
        "val_every=1000",
        "--set",
        "loss.lambda_black=0.0",
        "--set",
        "data.val_fraction=0.0",
        "--device",
        "cpu",  # gloo processes on the CPU, also where a GPU is
    ]
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "fusecli",
            "train",
            *common,
            "--batch-size",
            "2",
            "--run-dir",
            str(tmp_path / "ddp"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    single = subprocess.run(
        [sys.executable, "-m", "fusecli", "train", *common, "--batch-size", "4", "--run-dir", str(tmp_path / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("ddp", "one")
    ]
    assert len(logs[0]) == 4  # rank 0 alone logs, the mean over both ranks' shares
    # same initial weights, same samples split over the ranks: the first step's loss is the same
    assert logs[0][0]["total"] == pytest.approx(logs[1][0]["total"], rel=1e-6)
    assert logs[0][0]["l1"] == pytest.approx(logs[1][0]["l1"], rel=1e-6)
    # Adam scales each update to about +-lr, so a parameter whose gradient is ~0 may move either
    # way depending on the reduction order; the weights agree within the sum of the step sizes.
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    bound = 2 * sum(r["lr"] for r in logs[1])
    assert max((a[k] - b[k]).abs().max().item() for k in a) < bound
    close = sum(int(torch.isclose(a[k], b[k], atol=1e-6).sum()) for k in a) / sum(v.numel() for v in a.values())
    assert close > 0.95


def test_cli_bad_inputs(tmp_path):
    r = runner.invoke(app, ["train", str(SAMPLES)])
    assert r.exit_code == 1 and "--run-dir DIR is required" in r.stderr
    write_bracket_files(tmp_path / "unlabelled" / "a", smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32])
    r = runner.invoke(app, ["train", str(tmp_path / "unlabelled"), "--run-dir", str(tmp_path / "r1")])
    assert r.exit_code == 1 and "no stack has a label" in r.stderr
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "no checkpoint (last.pt) to resume from" in r.stderr
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(tmp_path / "afile" / "run"), *TINY])
    assert r.exit_code == 1 and "cannot write the run folder" in r.stderr
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(tmp_path / "r2"), "--set", "optim.lrr=1"])
    assert r.exit_code == 1 and "unknown setting 'optim.lrr'" in r.stderr


def test_cli_refuses_to_overwrite_a_run_and_checks_the_architecture_on_resume(tmp_path):
    run = tmp_path / "run"
    first = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), *TINY[:1], "2", *TINY[2:]])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), *TINY])
    assert again.exit_code == 1 and "already holds a training run" in again.stderr
    other = runner.invoke(app, ["train", "--resume", str(run), "--set", "model.width=16"])
    assert other.exit_code == 1 and "another architecture" in other.stderr
    more = runner.invoke(app, ["train", "--resume", str(run), "--steps", "4", "--export", str(tmp_path / "m")])
    assert more.exit_code == 0, more.stderr
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    assert json.loads((tmp_path / "m.json").read_text())["training"]["steps"] == 4


def test_decoded_stacks_are_cached_and_memory_mapped_the_second_time(tmp_path):
    first = load_labelled([str(SAMPLES)], tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3 * len(first)
    second = load_labelled([str(SAMPLES)], tmp_path / "cache")
    assert all(isinstance(s.frames, np.memmap) for s in second)
    assert all((a.frames == b.frames).all() and (a.label == b.label).all() for a, b in zip(first, second))


def test_set_checks_types_and_takes_train_keys_before_writing(tmp_path):
    run = tmp_path / "run"
    for setting, message in (
        ("optim.lr=abc", "optim.lr = 'abc' is not a valid float"),
        ("steps=2.5", "train.steps = 2.5 is not a valid int"),
        ('model.weight_mode="pixel"', "model.weight_mode = 'pixel' is not a valid"),
    ):
        r = runner.invoke(app, ["train", "--run-dir", str(run), "--set", setting])
        assert r.exit_code == 1 and message in r.stderr and "Traceback" not in r.stderr, (setting, r.stderr)
        assert not run.exists()  # nothing written before the configuration is checked
    cfg = apply_overrides(TrainConfig(), ["train.val_every=3"])
    assert cfg.val_every == 3  # models/default.toml's [train] table, reachable with --set
