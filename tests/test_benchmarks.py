"""The benchmarks run: `asv run --python=same --quick` on the infinite-width kernel suite, and
`asv check` on every suite. Nothing here is timed; asv only has to run each benchmark."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")


def asv(*args, timeout):
    return subprocess.run(["asv", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_every_benchmark_suite_is_valid():
    res = asv("check", "--python=same", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_kernel_benchmarks_run_quick(tmp_path):
    asv("machine", "--yes", "--machine", "ci", timeout=60)
    res = asv("run", "--python=same", "--quick", "--machine", "ci", "--bench", "bench_kernels",
              "--dry-run", "--show-stderr", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "failed" not in res.stdout.lower(), res.stdout
