"""The repository's own rules, checked where CI checks everything: formatting, lint, and the thin CLI."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (it is in the test extra)")
@pytest.mark.parametrize("command", [["format", "--check"], ["check"]])
def test_ruff_is_clean(command):
    r = subprocess.run([RUFF, *command, "fusecli", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_stays_thin_and_modules_small():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in (ROOT / "fusecli").rglob("*.py")}
    assert sizes["fusecli/cli.py"] <= 350, sizes["fusecli/cli.py"]
    assert max(sizes.values()) <= 600, max(sizes.items(), key=lambda kv: kv[1])
