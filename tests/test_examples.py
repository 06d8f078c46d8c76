"""Every example in examples/ runs at its default size, its claims hold, and it draws its figure.

Each example is a script that exits non-zero when a claim it asserts does not hold
(examples/_common.py); here each runs in a fresh interpreter, as a user would run it, and the
README's gallery is checked to show every one of them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def test_the_ten_claims_have_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_its_claims_hold(path, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, str(path), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=tmp_path)
    assert run.returncode == 0, f"{path.name} exited {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    assert "every claim held" in run.stdout
    assert "Warning" not in run.stderr, f"{path.name} warned:\n{run.stderr[-4000:]}"
    assert (tmp_path / f"{path.stem}.png").is_file()


def test_readme_gallery_shows_every_example():
    readme = (ROOT / "README.md").read_text()
    for path in EXAMPLES:
        assert f"examples/{path.name}" in readme, f"README's gallery lacks {path.name}"
        assert f"docs/gallery/{path.stem}.png" in readme, f"README's gallery lacks the figure of {path.name}"
        assert (ROOT / "docs" / "gallery" / f"{path.stem}.png").is_file()
