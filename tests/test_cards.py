"""Cards as shot: a camera card holds brackets with single shots and other scenes between them, all
from one camera, in shooting order. Exactly the brackets are fused, each of one scene; single shots
are listed, not fused, and not failures."""

import json
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image, TiffImagePlugin
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.discover import GroupOptions, discover

BRACKETS = ROOT.parent / "shared" / "data" / "brackets"
need_brackets = pytest.mark.skipif(not BRACKETS.is_dir(), reason="../shared/data/brackets is absent")
runner = CliRunner()
START = datetime(2026, 6, 1, 9, 0, 0)


def write_shot(path: Path, rgb: np.ndarray, seconds: float, when: datetime, *, camera=("Canon", "EOS R6"), mode=1):
    """One JPEG as a camera writes it: EXIF make, model, exposure time, f-number, ISO, exposure mode
    (0 auto, 1 manual, 2 auto bracket) and the capture time."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = camera
    sub = exif.get_ifd(0x8769)
    t = Fraction(seconds).limit_denominator(100000)
    sub[0x829A] = TiffImagePlugin.IFDRational(t.numerator, t.denominator)
    sub[0x829D] = TiffImagePlugin.IFDRational(8, 1)
    sub[0x8827] = 100
    sub[0xA402] = mode
    sub[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")
    Image.fromarray(rgb).save(path, quality=92, exif=exif)


def _bracket_frames(name: str, count: int, side: int = 480) -> list[tuple[np.ndarray, float]]:
    """``count`` frames of a real bracket (brightest, then evenly down to the darkest), downscaled,
    with their exposures in seconds (the bracket's own list or EXIF)."""
    from fusecli.stack import load_stack

    source = discover([BRACKETS / name])[0]
    stack = load_stack(source)
    picks = np.linspace(0, len(stack.infos) - 1, count).round().astype(int)
    out = []
    for k in picks:
        im = Image.open(stack.infos[k].path).convert("RGB")
        im.thumbnail((side, side))
        seconds = (stack.infos[0].exposure_time or 1 / 30) * stack.ratios[k]
        out.append((np.asarray(im), seconds))
    return out


def _single(name: str, side: int = 480) -> np.ndarray:
    """The normal exposure of another real bracket (its frame of mean brightness nearest mid-grey):
    a single shot of another scene, as a photographer takes one."""
    frames = sorted(p for p in (BRACKETS / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    shots = []
    for path in frames:
        im = Image.open(path).convert("RGB")
        im.thumbnail((side, side))
        shots.append(np.asarray(im))
    return min(shots, key=lambda rgb: abs(float(rgb.mean()) - 118))


def _crop(rgb: np.ndarray, shape) -> np.ndarray:
    """Every shot of one camera has one size: crop (or pad) to ``shape``."""
    h, w = shape[:2]
    out = np.zeros((h, w, 3), np.uint8)
    out[: min(h, rgb.shape[0]), : min(w, rgb.shape[1])] = rgb[:h, :w]
    return out


def make_card(folder: Path) -> dict[str, list[str]]:
    """A flat card: three real brackets (3, 3 and 2 frames), three single shots of other scenes
    between them, and two unrelated scenes shot 2 s apart at exposures 4 stops apart, one camera,
    in shooting order -> the expected brackets by first file name, and the expected singles."""
    folder.mkdir(parents=True)
    shape = (320, 480)
    plan = [
        ("bracket", "fymeng_garage", 3),
        ("single", "kim9878_scene2"),
        ("bracket", "yth345_dsc", 3),
        ("single", "mercuryyen_pool"),
        ("single", "felipegb94_lake"),
        ("bracket", "cwz_building1", 2),
        ("pair", "katm10_ante3", "fymeng_house"),  # unrelated, 2 s apart, 4 stops apart
    ]
    n, when, expected = 1, START, {"brackets": [], "singles": []}
    for item in plan:
        if item[0] == "bracket":
            names = []
            for rgb, seconds in _bracket_frames(item[1], item[2]):
                name = f"IMG_{n:04d}.JPG"
                write_shot(folder / name, _crop(rgb, shape), seconds, when)
                names.append(name)
                n, when = n + 1, when + timedelta(seconds=3)
            expected["brackets"].append(names)
        else:
            scenes = [(item[1], 1 / 60)] if item[0] == "single" else [(item[1], 1 / 15), (item[2], 1 / 240)]
            for scene, seconds in scenes:
                name = f"IMG_{n:04d}.JPG"
                write_shot(folder / name, _crop(_single(scene), shape), seconds, when)
                expected["singles"].append(name)
                n, when = n + 1, when + timedelta(seconds=2)
        when += timedelta(seconds=40)
    return expected


@pytest.mark.slow
@need_brackets
def test_a_card_dump_fuses_exactly_its_brackets_and_lists_the_single_shots(tmp_path):
    expected = make_card(tmp_path / "card")
    sources = discover([tmp_path / "card"])
    brackets = [[f.path.name for f in s.frames] for s in sources if not s.single]
    singles = [s.frames[0].path.name for s in sources if s.single]
    assert brackets == expected["brackets"]
    assert singles == expected["singles"]
    # every decision is shown with its reason and figure
    r = runner.invoke(app, ["inspect", str(tmp_path / "card")])
    assert r.exit_code == 0, r.stderr
    assert "another scene than" in r.stdout and "structure" in r.stdout and "single" in r.stdout
    r = runner.invoke(app, ["fuse", str(tmp_path / "card"), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["results"]
    assert sorted(row["stack"] for row in rows if row["status"] == "fused") == [b[0][:-4] for b in expected["brackets"]]
    assert sum(row["status"] == "single" for row in rows) == len(expected["singles"])
    assert len(list((tmp_path / "out").glob("*_fused.*"))) == len(expected["brackets"])


@need_brackets
def test_two_shots_days_apart_are_not_a_bracket(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    write_shot(card / "IMG_0001.JPG", _crop(_single("choupingru_livingroom"), (320, 480)), 1 / 30, START)
    later = START + timedelta(days=2)
    write_shot(card / "IMG_0002.JPG", _crop(_single("felipegb94_lake"), (320, 480)), 1 / 500, later)
    sources = discover([card])
    assert [s.single for s in sources] == [True, True]
    r = runner.invoke(app, ["fuse", str(card), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0 and not list((tmp_path / "out").glob("*_fused.*")), r.stderr


@need_brackets
def test_grouping_modes_override_the_pictures(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    for k, scene in enumerate(("choupingru_livingroom", "felipegb94_lake")):
        write_shot(card / f"IMG_{k + 1:04d}.JPG", _crop(_single(scene), (320, 480)), [1 / 30, 1 / 120][k], START)
    assert [s.single for s in discover([card])] == [True, True]
    [whole] = discover([card], GroupOptions(group="folder"))
    assert len(whole.frames) == 2 and not whole.single
    [by_metadata] = discover([card], GroupOptions(group="sequence"))  # distinct exposures: one bracket
    assert len(by_metadata.frames) == 2


def _scene(seed: int, h: int = 240, w: int = 320) -> np.ndarray:
    """A procedural radiance map (H, W, 3) with its median at half scale."""
    from fusecli.synth import procedural_scene

    scene = procedural_scene(h, w, np.random.default_rng(seed))
    return scene * np.float32(0.5 / np.percentile(scene, 50))


def _shot(scene: np.ndarray, exposure: float) -> np.ndarray:
    from fusecli.develop import linear_to_srgb

    return np.round(linear_to_srgb(np.clip(scene * exposure, 0, 1)) * 255).astype(np.uint8)


def test_a_synthetic_card_with_auto_bracket_exif_and_a_re_shot(tmp_path):
    """Without ../shared: two AEB brackets of two scenes (0, -2, +2 EV), a single shot between them,
    and a bracket whose last exposure was shot twice (1/25, 1/100, 1/100: one bracket, both fused)."""
    card, when, n = tmp_path / "card", START, 1
    card.mkdir()

    def shoot(scene, seconds, mode):
        nonlocal when, n
        write_shot(card / f"DSC{n:05d}.JPG", _shot(scene, seconds * 30), seconds, when, mode=mode)
        n, when = n + 1, when + timedelta(seconds=1)

    for seconds in (1 / 30, 1 / 120, 1 / 8):
        shoot(_scene(1), seconds, mode=2)
    shoot(_scene(2), 1 / 30, mode=0)
    for seconds in (1 / 30, 1 / 120, 1 / 8):
        shoot(_scene(3), seconds, mode=2)
    for seconds in (1 / 25, 1 / 100, 1 / 100):
        shoot(_scene(4), seconds, mode=1)
    sources = discover([card])
    assert [(len(s.frames), s.single) for s in sources] == [(3, False), (1, True), (3, False), (3, False)]
    assert any("both are fused" in note for note in sources[3].notes)
    r = runner.invoke(app, ["fuse", str(card), "-o", str(tmp_path / "out"), "--align", "none"])
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "out").glob("*_fused.jpg"))) == 3


def test_a_single_shot_alone_is_listed_not_failed(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    write_shot(card / "IMG_0001.JPG", _shot(_scene(5), 1 / 30), 1 / 30, START)
    r = runner.invoke(app, ["fuse", str(card), "-o", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.stderr
    [row] = json.loads(r.stdout)["results"]
    assert row["status"] == "single" and "single shot" in row["reason"]
    r = runner.invoke(app, ["inspect", str(card), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["stacks"][0]["single"] is True


def test_a_raw_is_compared_on_its_embedded_preview_and_without_one_on_its_mosaic(tmp_path):
    from conftest import camera

    from fusecli.grouping import thumbnail
    from fusecli.io.dng import write_dng
    from fusecli.io.raw import probe_raw

    cam = camera()
    dark = np.full((96, 128), int(cam.black_level[0]), np.uint16)  # black mosaic
    white = np.full((48, 64, 3), 255, np.uint8)
    write_dng(tmp_path / "with.dng", dark, cam, preview=white)  # a camera's preview of another picture
    write_dng(tmp_path / "without.dng", dark, cam)
    assert thumbnail(probe_raw(tmp_path / "with.dng")).mean() == pytest.approx(1.0)
    assert thumbnail(probe_raw(tmp_path / "without.dng")).mean() == pytest.approx(0.0, abs=1e-6)
