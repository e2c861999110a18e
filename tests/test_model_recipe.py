"""models/default.toml is the recipe of the shipped model: a few steps trained from it export a
sidecar whose every [model] key matches models/default.json's architecture; and the recipe's
start, without ../shared, is one line that names what it needs, with no run folder left behind."""

import json

import tomllib
from conftest import ROOT
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.train import TrainConfig, apply_overrides, train

RECIPE = ROOT / "models" / "default.toml"
SHIPPED = json.loads((ROOT / "models" / "default.json").read_text())
runner = CliRunner()


def test_a_few_steps_from_the_recipe_export_the_shipped_architecture(tmp_path):
    recipe = tomllib.loads(RECIPE.read_text())
    cfg = TrainConfig.from_toml(RECIPE)
    # the recipe's architecture and loss, on a little procedural data so that any clone can run it
    cfg = apply_overrides(
        cfg,
        [
            "steps=2",
            "batch_size=2",
            "val_every=1000",
            'device="cpu"',
            "data.synth_radiance=[]",
            "data.display_radiance=[]",
            "data.val_radiance=[]",
            "data.synth_procedural=2",
            "data.synth_size=64",
            "data.synth_val=1",
            "data.display_procedural=0",
            "data.crop=32",
            "data.workers=0",
        ],
    )
    train(cfg, tmp_path / "run", export=tmp_path / "model")
    exported = json.loads((tmp_path / "model.json").read_text())["architecture"]
    assert set(recipe["model"]) <= set(exported)
    for key, value in recipe["model"].items():
        assert exported[key] == SHIPPED["architecture"][key] == value, key
    assert recipe["loss"] == {k: SHIPPED["loss"][k] for k in recipe["loss"]}


def test_the_recipe_without_its_data_names_the_first_missing_map_and_leaves_no_run_folder(tmp_path):
    missing = tmp_path / "no-such-map.hdr"
    run = tmp_path / "run"
    r = runner.invoke(
        app, ["train", "--config", str(RECIPE), "--run-dir", str(run), "--set", f"data.synth_radiance=['{missing}']"]
    )
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"{missing}: no such file or folder (data.synth_radiance)" in r.stderr
    assert not run.exists()


def test_a_train_that_fails_to_start_leaves_no_run_folder(tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--run-dir", str(run), "--set", "data.synth_procedural=0"])
    assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
    assert not run.exists()


def test_train_on_a_missing_gpu_is_refused_before_the_run_folder_is_made(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--run-dir", str(run), "--set", "data.synth_procedural=2", "--device", "cuda"])
    assert r.exit_code == 1 and "no CUDA device is available" in r.stderr
    assert not run.exists()
