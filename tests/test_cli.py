"""The command line as a user runs it: CliRunner for most cases, one real subprocess."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, smooth_scene, tiny_train, write_bracket_files
from typer.testing import CliRunner

from fusecli import __version__
from fusecli.cli import app

SAMPLES = ROOT / "samples"
runner = CliRunner()


def test_inspect_samples_json():
    result = runner.invoke(app, ["inspect", str(SAMPLES), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failed"] == 0
    assert [s["name"] for s in data["stacks"]] == ["cannon_001", "cannon_002", "procedural_001"]
    for stack in data["stacks"]:
        assert stack["kind"] == "raw" and stack["channels"] == 4 and (stack["width"], stack["height"]) == (256, 192)
        assert stack["ratios"] == [1.0, 0.25, 0.0625] and stack["ratio_source"] == "exif"
        assert stack["label"].endswith("label.tif") and stack["cfa"] in ("RGGB", "BGGR", "GRBG", "GBRG")
        assert [f["path"].rsplit("/", 1)[1] for f in stack["frames"]] == ["frame_1.dng", "frame_2.dng", "frame_3.dng"]


def test_inspect_table_names_every_stack_and_decision(real):
    result = runner.invoke(app, ["inspect", str(SAMPLES), str(real("ldr_stack_ssarcandy_taipei"))])
    assert result.exit_code == 0
    for text in (
        "cannon_001",
        "procedural_001",
        "frame_3.dng",
        "0.0625",
        "exif",
        "sidecar",
        "1/16",
        "one stack: the folder has an exposure list",
    ):
        assert text in result.stdout


def test_missing_path_is_one_line_and_exit_1(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"fusecli: error: {tmp_path / 'nope'}: no such file or folder"
    assert "Traceback" not in result.output


def test_one_bad_stack_does_not_hide_the_others(tmp_path):
    write_bracket_files(tmp_path / "good", smooth_scene(), [1, 0.25], times=[1 / 8, 1 / 32])
    write_bracket_files(tmp_path / "same", smooth_scene(), [1, 1], times=[1 / 8, 1 / 8])
    (tmp_path / "same" / "exposures.txt").write_text("IMG_0001.dng 1/8\nIMG_0002.dng 1/8\n")  # one stack, one exposure
    write_bracket_files(tmp_path / "single", smooth_scene(), [1], times=[1 / 8])
    result = runner.invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["failed"] == 1
    good, same, single = data["stacks"]
    assert good["ratios"] == [1.0, 0.25] and "same exposure" in same["error"] and single["single"] is True
    assert "same" in result.stderr and result.stderr.count("\n") == 1


def test_ratios_option(tmp_path):
    write_bracket_files(tmp_path, smooth_scene(), [1, 0.25, 0.0625])
    result = runner.invoke(app, ["inspect", str(tmp_path), "--json", "--ratios", "1,0.3,0.1"])
    assert result.exit_code == 0
    [stack] = json.loads(result.stdout)["stacks"]
    assert stack["ratios"] == [1.0, 0.3, 0.1] and stack["ratio_source"] == "user"
    bad = runner.invoke(app, ["inspect", str(tmp_path), "--ratios", "1,fast"])
    assert bad.exit_code == 2 and "expected comma-separated numbers" in bad.stderr  # a usage error


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"fusecli {__version__}"


def test_synth_command_writes_readable_stacks(tmp_path):
    result = runner.invoke(
        app, ["synth", "--procedural", "2", "--size", "64x48", "--cfa", "BGGR", "-o", str(tmp_path), "--seed", "3"]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "procedural_001"), str(tmp_path / "procedural_002")]
    listed = json.loads(runner.invoke(app, ["inspect", str(tmp_path), "--json"]).stdout)
    assert [s["cfa"] for s in listed["stacks"]] == ["BGGR", "BGGR"]
    again = runner.invoke(app, ["synth", "--procedural", "1", "--size", "64x48", "-o", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = runner.invoke(app, ["synth", "--procedural", "1", "--size", "64x47", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "must be even" in bad.stderr  # a usage error


def test_installed_command_runs_as_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "fusecli", "inspect", str(SAMPLES), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["stacks"]) == 3


def test_native_library_defaults_are_set_before_numpy_and_torch_load():
    # numpy and torch read them when they load: the CLI module must not load them before main() sets
    # them; a value the user set is kept (here OMP_WAIT_POLICY), the others take fusecli's defaults
    script = (
        "import os, sys\n"
        "os.environ.pop('NUMPY_MADVISE_HUGEPAGE', None)\n"
        "os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\n"
        "import fusecli.cli\n"
        "print('numpy' in sys.modules, 'torch' in sys.modules)\n"
        "fusecli.runtime.library_defaults()\n"
        "import numpy as np\n"
        "print(os.environ['OMP_WAIT_POLICY'], np._core.multiarray._set_madvise_hugepage(True))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the second False: numpy started with its huge-page advice off (it returns the previous setting)
    assert proc.stdout.split() == ["False", "False", "ACTIVE", "False"]


def test_help_follows_typer_and_click_conventions():
    short = runner.invoke(app, ["fuse", "-h"])
    assert short.exit_code == 0 and "--max-memory" in short.stdout
    for panel in ("Input", "Output", "Alignment", "Model and device"):
        assert panel in short.stdout  # fuse's options grouped, as enfuse groups its own
    top = runner.invoke(app, ["--help"])
    assert "--install-completion" in top.stdout and "--show-completion" in top.stdout
    train = runner.invoke(app, ["train", "--help"])
    assert "TOML configuration" in train.stdout and "(, , , , )" not in train.stdout  # no markup eaten


def test_piped_output_keeps_rows_and_errors_on_one_line(tmp_path):
    """Off a terminal Rich would fold tables at 80 columns: a pipeline reading them gets full rows;
    a user error stays one line however long the path."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "fusecli", "inspect", str(SAMPLES)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0
    assert any("cannon_001" in line and "frame_1.dng" in line and "exif" in line for line in r.stdout.splitlines())
    deep = tmp_path / ("a_rather_long_folder_name_" * 6) / "missing"
    r = subprocess.run(
        [sys.executable, "-m", "fusecli", "inspect", str(deep)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(deep) in r.stderr


def test_option_values_are_named_not_typed_in_help():
    text = runner.invoke(app, ["fuse", "-h"], terminal_width=160).stdout
    assert "--out" in text and "PATH" in text and "--group-size" in text
    assert "<str>" not in text and "<float>" not in text and "<int>" not in text  # Typer's type tags
    assert text.count("<bool>") <= 1  # only Typer's own --help flag may keep its tag (0.29 does, 0.27 not)


# --- pipelines -------------------------------------------------------------------------------------


def test_dash_reads_the_paths_from_stdin_one_per_line_or_nul_separated(tmp_path):
    folders = [SAMPLES / "cannon_001", SAMPLES / "procedural_001"]
    for text in ("\n".join(map(str, folders)) + "\n", "\0".join(map(str, folders)) + "\0"):
        proc = subprocess.run(
            [sys.executable, "-m", "fusecli", "inspect", "-", "--json"], input=text, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert [s["name"] for s in json.loads(proc.stdout)["stacks"]] == ["cannon_001", "procedural_001"]
    empty = runner.invoke(app, ["fuse", "-", "-o", str(tmp_path)], input="")
    assert empty.exit_code == 2 and "-: no paths on standard input" in empty.stderr


def test_fuse_json_rows_name_their_inputs_and_outputs(tmp_path):
    r = runner.invoke(app, ["fuse", str(SAMPLES / "cannon_001"), "-o", str(tmp_path), "--format", "dng,jpg", "--json"])
    assert r.exit_code == 0, r.stderr
    document = json.loads(r.stdout)
    assert set(document) == {"schema", "results", "failed"} and document["failed"] == 0
    [row] = document["results"]
    keys = {"stack", "status", "inputs", "outputs", "reason", "seconds", "megapixels", "motion", "warnings", "notes"}
    assert set(row) == keys
    assert row["inputs"] == [str(SAMPLES / "cannon_001" / f"frame_{k}.dng") for k in (1, 2, 3)]
    assert row["outputs"] == [str(tmp_path / "cannon_001_fused.dng"), str(tmp_path / "cannon_001_fused.jpg")]
    assert row["status"] == "fused" and row["megapixels"] == pytest.approx(256 * 192 * 4 / 1e6, abs=1e-3)


def test_quiet_prints_only_errors_and_verbose_adds_each_stacks_notes(tmp_path):
    quiet = runner.invoke(app, ["fuse", str(SAMPLES), "-o", str(tmp_path / "a"), "-q"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a picture")
    (tmp_path / "bad" / "b.png").write_bytes(b"not a picture")
    failed = runner.invoke(app, ["fuse", str(tmp_path / "bad"), "-o", str(tmp_path / "b"), "--quiet"])
    assert failed.exit_code == 1 and failed.stdout == "" and failed.stderr.startswith("fusecli fuse: error: bad: ")
    verbose = runner.invoke(app, ["fuse", str(SAMPLES / "cannon_001"), "-o", str(tmp_path / "c"), "-v"])
    assert verbose.exit_code == 0 and "fusecli fuse: note: cannon_001: " in verbose.stderr


def test_without_a_terminal_each_stack_is_one_progress_line_on_stderr(tmp_path):
    r = runner.invoke(app, ["fuse", str(SAMPLES), "-o", str(tmp_path), "--json"])  # stderr is not a terminal here
    assert r.exit_code == 0
    lines = [line for line in r.stderr.splitlines() if " stacks: " in line]
    assert [line.split(" stacks: ")[0] for line in lines] == ["1/3", "2/3", "3/3"]
    assert lines[0].startswith("1/3 stacks: cannon_001 fused in ") and "MP/s" in lines[0]
    json.loads(r.stdout)  # stdout still holds the JSON alone


def test_synth_and_train_print_json_when_asked(tmp_path):
    r = runner.invoke(app, ["synth", "--procedural", "1", "--size", "64x48", "-o", str(tmp_path / "s"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout) == {"schema": 1, "stacks": [str(tmp_path / "s" / "procedural_001")]}
    tiny = tiny_train(1)
    r = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(tmp_path / "run"), *tiny, "--json"])
    assert r.exit_code == 0, r.stderr
    document = json.loads(r.stdout)
    assert document["run"] == str(tmp_path / "run") and document["steps"] == 1 and document["export"] is None
    assert document["validation"]["psnr"] > 0
    human = runner.invoke(app, ["train", str(SAMPLES), "--run-dir", str(tmp_path / "run2"), *tiny])
    assert human.exit_code == 0 and human.stdout.startswith(f"fusecli train: 1 step in {tmp_path / 'run2'}")
