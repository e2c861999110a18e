"""The repository's own rules, checked where CI checks everything: formatting and lint, a thin CLI
and small modules, a README that is a front door, figures as data in one place, no history in
tracked files, and discovery that loads no alignment code."""

import json
import re
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


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
    assert lines[2].strip().startswith("make demo") and lines[3].strip().startswith("make test")
    assert any(re.search(r"fusecli fuse \S+ -o \S+", line) for line in lines[:60])
    assert len((ROOT / "bench" / "README.md").read_text().splitlines()) <= 200
    for link in re.findall(r"\]\(((?:docs|bench|models)/[^)#]+)\)", "\n".join(lines)):
        assert (ROOT / link).exists(), link


def test_tracked_files_tell_no_history():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    text_files = [f for f in files if f.endswith((".py", ".md", ".toml", ".sh", ".txt")) and not f.startswith("tests/")]
    said = [f for f in text_files if re.search(r"\bsessions?\b", (ROOT / f).read_text(errors="replace"), re.I)]
    assert not said, said


def test_figures_are_data_and_the_pages_tables_are_generated_from_them():
    results = [json.loads(p.read_text()) for p in (ROOT / "bench" / "results").glob("*.json")]
    assert len(results) >= 5
    for r in results:
        assert {"command", "date", "commit", "machine", "figures", "headlines"} <= set(r)
        assert r["machine"]["cpu"] and r["machine"]["cores"] >= 1 and r["commit"]
    r = subprocess.run([sys.executable, "bench/summary.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_discovering_stacks_loads_no_alignment_code_and_no_torch():
    code = "import sys, fusecli.discover; print(sorted(m for m in sys.modules if m.startswith(('fusecli', 'torch'))))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "fusecli.align" not in loaded and "fusecli.registration" not in loaded and "'torch'" not in loaded, loaded
