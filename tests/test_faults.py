"""One bad file, folder, name or value never costs another stack, a traceback or a wrong picture:
each case a user met, run as the user runs it (the CLI), with what must hold afterwards."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import ROOT, camera, child_env, smooth_scene, tiny_train, write_bracket_files
from PIL import Image
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.discover import discover

runner = CliRunner()
SAMPLES = ROOT / "samples"
TIMES = [1 / 8, 1 / 32, 1 / 128]


def _bracket(folder: Path, times=TIMES, **kw) -> list[Path]:
    return write_bracket_files(folder, smooth_scene(), [t * 8 for t in times], times=times, **kw)


def _fuse(*args) -> object:
    return runner.invoke(app, ["fuse", *map(str, args)])


def _one_line(r) -> str:
    """The run's stderr, checked to be one line with no traceback."""
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


# --- names and temporaries -------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_stacks_named_x_x_and_x_2_get_outputs_that_never_collide(tmp_path, overwrite):
    for where, seed in (("a/x", 0), ("b/x", 1), ("c/x_2", 2)):
        write_bracket_files(tmp_path / "in" / where, smooth_scene(seed=seed), [1, 0.25], times=[1 / 8, 1 / 32])
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out", "--json", *(["--overwrite"] if overwrite else []))
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    outputs = [o for row in rows for o in row["outputs"]]
    assert len(outputs) == 3 and len(set(outputs)) == 3
    assert len(list((tmp_path / "out").glob("*_fused.dng"))) == 3
    pictures = {hash(Path(o).read_bytes()) for o in outputs}
    assert len(pictures) == 3  # three different scenes, none replaced by another


def _part(folder: Path, host: str, ns: int, pid: int, age: float = 0.0) -> Path:
    p = folder / f".stack_fused.dng.fc-{host}-{ns}-{pid}.0123abcd.part"
    p.write_bytes(b"in progress")
    if age:
        os.utime(p, (time.time() - age, time.time() - age))
    return p


def test_a_run_never_removes_a_live_temporary_of_another_host_or_container(tmp_path):
    from fusecli.io import common

    here_host, here_ns = common._HOST, common._pid_namespace()
    dead = subprocess.Popen(["true"])
    dead.wait()
    other_container = _part(tmp_path, here_host, here_ns + 1, dead.pid)  # its PID means nothing here
    other_host = _part(tmp_path, "0badc0de", here_ns, dead.pid)
    dead_here = _part(tmp_path, here_host, here_ns, dead.pid)
    abandoned = _part(tmp_path, "0badc0de", 7, 12345, age=2 * common.STALE_AFTER)
    foreign = tmp_path / ".notes.txt.part"  # not fusecli's
    foreign.write_text("x")
    assert common.remove_stale_parts(tmp_path) == 2
    assert other_container.exists() and other_host.exists() and foreign.exists()
    assert not dead_here.exists() and not abandoned.exists()


def test_output_names_up_to_the_file_systems_limit_are_written(tmp_path):
    name = "b" * (255 - len("_fused.dng"))
    _bracket(tmp_path / "in" / name)
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "out" / f"{name}_fused.dng").is_file()
    assert not list((tmp_path / "out").glob(".*.part"))


# --- files that are not what they seem --------------------------------------------------------------


def test_a_fifo_named_like_a_frame_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "f.png")
    _bracket(tmp_path / "good")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusecli",
            "fuse",
            str(tmp_path / "f.png"),
            str(tmp_path / "good"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert r.returncode == 1 and "f.png: not a regular file" in r.stderr, r.stderr
    assert len(list((tmp_path / "out").glob("*_fused.dng"))) == 1  # the good bracket is fused


def test_a_bracket_with_an_unreadable_frame_fails_and_a_rerun_after_repair_fuses_it(tmp_path):
    paths = _bracket(tmp_path / "in")
    good = paths[1].read_bytes()
    paths[1].write_bytes(good[:40])  # truncated to its first bytes: no header left
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1
    [row] = json.loads(r.stdout)["results"]
    assert row["status"] == "failed" and paths[1].name in row["reason"] and "a frame of this bracket" in row["reason"]
    assert not list((tmp_path / "out").glob("*_fused.*"))  # never fused from the other frames
    paths[1].write_bytes(good)
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["results"][0]["status"] == "fused"


def test_a_truncated_frame_among_good_stacks_is_named_unreadable_whatever_the_format(tmp_path):
    _bracket(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "IMG_0001.dng").write_bytes(b"II*\x00" + b"\x00" * 20)
    r = _fuse(tmp_path, "-o", tmp_path / "out", "--format", "dng", "--json")
    reasons = [row["reason"] for row in json.loads(r.stdout)["results"] if row["status"] == "failed"]
    assert len(reasons) == 1 and "IMG_0001.dng" in reasons[0] and "format dng" not in reasons[0]
    assert len(list((tmp_path / "out").glob("*_fused.dng"))) == 1


def test_a_cmyk_tiff_is_refused_by_name_not_read_as_rgb(tmp_path):
    (tmp_path / "in").mkdir()
    for k, v in enumerate((0, 64)):
        tifffile.imwrite(tmp_path / "in" / f"c{k}.tif", np.full((16, 16, 4), v, np.uint8), photometric="separated")
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "CMYK" in r.stderr and not list((tmp_path / "out").glob("*_fused.*"))


def test_grey_and_alpha_frames_are_read_like_rgba_ones(tmp_path):
    (tmp_path / "in").mkdir()
    scene = smooth_scene(64, 96)
    for k, r in enumerate((1.0, 0.25)):
        grey = np.round(np.clip(scene * r / 3, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
        Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA").save(tmp_path / "in" / f"f{k}.png")
    (tmp_path / "in" / "exposures.txt").write_text("f0.png 1/8\nf1.png 1/32\n")
    r = _fuse(tmp_path / "in", "-o", tmp_path / "out", "--format", "png")
    assert r.exit_code == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out" / "in_fused.png"))
    assert out.shape == (64, 96)


def test_a_dng_whose_colour_matrix_has_a_zero_denominator_fails_its_own_stack_at_most(tmp_path):
    paths = _bracket(tmp_path / "bad")
    _bracket(tmp_path / "good")
    for path in paths:  # ColorMatrix1's first SRATIONAL denominator set to 0
        with tifffile.TiffFile(path) as tf:
            tag = tf.pages[0].tags["ColorMatrix1"]
            at = tag.valueoffset
        with open(path, "r+b") as f:
            f.seek(at + 4)
            f.write(struct.pack("<i", 0))
    r = _fuse(tmp_path, "-o", tmp_path / "out", "--json")
    assert "Traceback" not in r.stderr and "ZeroDivisionError" not in r.stderr
    rows = {row["stack"]: row for row in json.loads(r.stdout)["results"]}
    assert rows["good"]["status"] == "fused" and rows["bad"]["status"] in ("fused", "failed")


# --- exposures that lie ----------------------------------------------------------------------------


def test_an_absurd_exif_exposure_is_ignored_and_the_pixels_decide(tmp_path):
    write_bracket_files(tmp_path / "in", smooth_scene(), [1, 0.25], times=[1e9, 1 / 32])
    r = runner.invoke(app, ["inspect", str(tmp_path / "in"), "--json"])
    [row] = json.loads(r.stdout)["stacks"]
    assert row["ratio_source"] == "estimated" and row["ratios"][1] == pytest.approx(0.25, rel=0.05)
    assert any("1e+09 s is absurd" in n for n in row["notes"])


def test_exif_exposures_four_stops_off_the_pixels_are_replaced_by_the_estimate(tmp_path):
    write_bracket_files(tmp_path / "in", smooth_scene(), [1, 1 / 32], times=[1 / 8, 1 / 16])  # EXIF says 1 stop
    (tmp_path / "in" / "label.tif").unlink(missing_ok=True)
    from fusecli.stack import load_stack

    stack = load_stack(discover([tmp_path / "in"])[0])
    assert stack.ratios[1] == pytest.approx(1 / 32, rel=0.1) and stack.ratio_source == "estimated"
    assert any("disagree with the pixels by 4.0 EV" in n for n in stack.notes)


def test_listed_exposures_stand_where_only_nearly_black_frames_disagree(tmp_path):
    """Ten frames 3 stops apart: the darkest are black but for noise and a few lamps, which say
    nothing of their exposure; the list beside them stands (bench_eval's stacks)."""
    from fusecli.stack import load_stack
    from fusecli.synth import DisplayConfig, synthesise

    written = synthesise([], tmp_path, procedural=4, display=DisplayConfig(size=768, frames=10), seed=0)
    for folder in written:
        stack = load_stack(discover([folder])[0])
        assert stack.ratio_source == "sidecar", (folder.name, stack.notes)


# --- folders -------------------------------------------------------------------------------------


def test_an_unreadable_subfolder_fails_its_own_stack_only(tmp_path, monkeypatch):
    _bracket(tmp_path / "good")
    (tmp_path / "locked").mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    r = _fuse(tmp_path, "-o", tmp_path / "out", "--json")
    rows = {row["stack"]: row for row in json.loads(r.stdout)["results"]}
    assert r.exit_code == 1 and rows["good"]["status"] == "fused"
    assert rows["locked"]["status"] == "failed" and "cannot list the folder" in rows["locked"]["reason"]


def test_a_folder_with_two_labels_fails_its_own_stack_only(tmp_path):
    _bracket(tmp_path / "good")
    _bracket(tmp_path / "twice")
    for name in ("label.tif", "label.png"):
        (tmp_path / "twice" / name).write_bytes(b"x")
    r = _fuse(tmp_path, "-o", tmp_path / "out", "--json")
    rows = {row["stack"]: row for row in json.loads(r.stdout)["results"]}
    assert rows["good"]["status"] == "fused" and "more than one label" in rows["twice"]["reason"]


def test_a_camera_change_makes_single_shots_not_a_one_frame_failure(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1], times=[1 / 8])
    write_bracket_files(
        tmp_path, smooth_scene(), [0.25], cam=camera(model="other"), times=[1 / 32], names=["IMG_0002.dng"]
    )
    r = _fuse(tmp_path, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0 and "only 1 frame" not in r.stderr
    assert [row["status"] for row in json.loads(r.stdout)["results"]] == ["single", "single"]


# --- values and messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["fuse", SAMPLES, "-o", "OUT", "--max-memory", "inf"],
        ["fuse", SAMPLES, "-o", "OUT", "--max-memory", "nan"],
        ["fuse", SAMPLES, "-o", "OUT", "--ratios", "1,abc"],
        ["fuse", SAMPLES, "-o", "OUT", "--shard", "3/2"],
        ["fuse", SAMPLES, "-o", "OUT", "--group-size", "1"],
        ["eval", SAMPLES, "--json", "--csv"],
        ["eval", SAMPLES, "--fail-under", "psnr=nan"],
        ["eval", SAMPLES, "--fail-over", "l1=inf"],
        ["synth", "-o", "OUT", "--size", "100000x100000"],
    ],
)
def test_bad_option_values_are_usage_errors_in_one_line(tmp_path, args):
    r = runner.invoke(app, [str(tmp_path / "out") if a == "OUT" else str(a) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    _one_line(r)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change", [{"format_version": "2"}, {"architecture": ["FuseNet-pyramid"]}, {"loss": 3}])
def test_model_sidecars_of_the_wrong_types_are_refused_in_one_line(tmp_path, change):
    shutil.copy(ROOT / "models" / "default.safetensors", tmp_path / "m.safetensors")
    sidecar = json.loads((ROOT / "models" / "default.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**sidecar, **change}))
    r = _fuse(SAMPLES, "-o", tmp_path / "out", "--model", tmp_path / "m")
    assert r.exit_code == 1 and "m.json" in _one_line(r)


@pytest.mark.parametrize("setting", [["--set", "optim.lr=nan"], ["--lr", "-1"], ["--set", "data.workers=-1"]])
def test_training_settings_out_of_range_are_refused_before_anything_is_written(tmp_path, setting):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), *setting])
    assert r.exit_code == 1 and "must be a finite number" in _one_line(r)
    assert not run.exists()


def test_eval_report_into_an_unwritable_folder_fails_before_scoring(tmp_path):
    (tmp_path / "afile").write_text("x")
    t0 = time.perf_counter()
    r = runner.invoke(app, ["eval", str(SAMPLES), "--report", str(tmp_path / "afile" / "report")])
    assert r.exit_code == 1 and "cannot write the report" in _one_line(r)
    assert time.perf_counter() - t0 < 30  # refused up front, not after the scores


def test_train_export_into_an_unwritable_folder_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), "--export", str(tmp_path / "afile" / "m")])
    assert r.exit_code == 1 and "cannot write the model file" in _one_line(r)
    assert not run.exists()


def test_a_partial_last_log_line_does_not_break_resume_and_export(tmp_path):
    run = tmp_path / "run"
    tiny = tiny_train(2)
    assert runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), *tiny]).exit_code == 0
    with open(run / "log.jsonl", "a") as log:
        log.write('{"step": 3, "tot')  # a run killed while writing its log
    r = runner.invoke(app, ["train", "--resume", str(run), "--steps", "3", "--export", str(tmp_path / "m")])
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "m.safetensors").is_file()


def test_a_full_disk_while_caching_training_data_leaves_no_part_file(tmp_path, monkeypatch):
    import fusecli.dataset

    def full(path, array):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fusecli.dataset.np, "save", full)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), "--steps", "1"])
    assert r.exit_code == 1 and "no space left on the device" in _one_line(r)
    assert not run.exists() or not list(run.rglob("*.part.npy"))


def test_two_trains_into_one_run_folder_do_not_both_run(tmp_path):
    from fusecli.train import _run_lock

    run = tmp_path / "run"
    with _run_lock(run, 0):  # another train holds the folder
        r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(run), "--steps", "1"])
    assert r.exit_code == 1 and "another fusecli train is running" in _one_line(r)
    assert not (run / "config.json").exists()


def test_a_full_disk_is_named_as_such_whatever_the_encoder_says(tmp_path, monkeypatch):
    import fusecli.outputs

    def short(*args, **kwargs):
        raise OSError("2359296 requested and 1537936 written")

    monkeypatch.setattr(fusecli.outputs, "write_dng", short)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 10, 0))
    r = _fuse(SAMPLES / "cannon_001", "-o", tmp_path / "out", "--json")
    assert r.exit_code == 1
    assert "no space left on the device" in json.loads(r.stdout)["results"][0]["reason"]


def test_eval_json_is_valid_json_even_for_non_finite_figures():
    from fusecli.console import dumps

    text = dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"d": None},
    }


def test_a_long_refusal_is_one_readable_line(tmp_path):
    shutil.copy(ROOT / "models" / "default.safetensors", tmp_path / "m.safetensors")
    sidecar = json.loads((ROOT / "models" / "default.json").read_text())
    sidecar["architecture"].update({f"setting_{k}": k for k in range(300)})  # a 3,000-character refusal
    (tmp_path / "m.json").write_text(json.dumps(sidecar))
    r = _fuse(SAMPLES, "-o", tmp_path / "out", "--model", tmp_path / "m")
    assert r.exit_code == 1 and "unknown model setting(s) setting_0" in r.stderr and len(_one_line(r)) < 450
