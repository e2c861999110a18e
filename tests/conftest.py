"""Shared fixtures: the real data in ../shared (skipped with a reason when absent) and DNG writers."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fusecli.io.dng import write_dng
from fusecli.io.metadata import Capture
from fusecli.io.raw import CameraInfo, cfa_offsets
from fusecli.synth import SynthConfig, render_bracket

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("FUSECLI_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture
def real():
    """real("folder/file") -> the path under ../shared/data/real, or skip when it is not there."""

    def get(relative: str) -> Path:
        path = REAL / relative
        if not path.exists():
            pytest.skip(f"real test data {path} is absent (it lives in ../shared beside the checkout)")
        return path

    return get


def child_env(**extra: str) -> dict:
    """The environment of a ``python -m fusecli`` child process: this checkout first on PYTHONPATH,
    whatever PYTHONPATH already held after it (packages installed there by path, as on a lent GPU
    machine), and ``extra``."""
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **extra
    )


def tiny_train(steps: int) -> list[str]:
    """``fusecli train`` options for a network that trains in seconds on the samples."""
    small = ["data.crop=32", "model.width=8", "model.depth=2"]
    return ["--steps", str(steps), "--batch-size", "2", *(a for s in small for a in ("--set", s))]


def camera(
    cfa: str = "RGGB", black=(512.0, 520.0, 530.0, 540.0), white: float = 4095.0, model: str = "test"
) -> CameraInfo:
    return CameraInfo(
        "fusecli",
        model,
        cfa,
        tuple(black),
        white,
        (2.0, 1.0, 1.5),
        (0.6461, -0.1164, -0.0857, -0.3825, 1.1597, 0.2534, -0.0416, 0.154, 0.6039),
    )


def write_bracket_files(
    folder: Path,
    scene: np.ndarray,
    ratios,
    *,
    cam: CameraInfo | None = None,
    times=None,
    start=None,
    names=None,
    step_s: float = 1.0,
    gps: dict | None = None,
) -> list[Path]:
    """Write one DNG per ratio of a linear mosaic ``scene`` (H, W) in full-scale units (clipped at 1).

    ``times``: exposure times to write (None leaves the tag out; 0 writes 0 as some cameras do);
    ``gps``: GPS tags by number, as Pillow takes them.
    """
    cam = cam or camera()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    start = start or datetime(2026, 5, 1, 10, 0, 0)
    black = np.empty(scene.shape)  # per CFA position, as the sensor has them
    for value, (dy, dx) in zip(cam.black_level, cfa_offsets(cam.cfa)):
        black[dy::2, dx::2] = value
    for k, r in enumerate(ratios):
        mosaic = np.clip(
            np.round(np.minimum(scene * r, 1.0) * (cam.white_level - black) + black), 0, cam.white_level
        ).astype(np.uint16)
        name = names[k] if names else f"IMG_{k + 1:04d}.dng"
        t = None if times is None else times[k]
        path = folder / name
        write_dng(
            path,
            mosaic,
            cam,
            Capture.shot(
                time=t,
                aperture=8.0 if t else None,
                iso=100 if t else None,
                timestamp=start + timedelta(seconds=k * step_s),
            ).with_gps(gps or {}),
        )
        paths.append(path)
    return paths


def smooth_scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A mosaic-sized scene (h, w) with values spread over 0.02 .. 3 (full-scale units)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return (0.02 + 3.0 * x * y + 0.05 * rng.random((h, w))).astype(np.float64)


@pytest.fixture
def tiny_bracket():
    """A small synthetic bracket in memory (64x48 mosaic, random CFA) from a procedural scene."""
    from fusecli.synth import procedural_scene

    def make(seed: int = 0, cfa: str | None = None):
        cfg = SynthConfig(width=64, height=48, cfa=cfa)
        rng = np.random.default_rng(seed)
        return render_bracket(procedural_scene(48, 64, rng), cfg, rng)

    return make
