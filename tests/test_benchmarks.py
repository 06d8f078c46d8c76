"""The benchmarks run. `asv check` validates every suite; each benchmark of every suite runs once
in process at its first (smallest) parameter combination; and `asv run --python=same --quick`
runs one class through asv's own runner. Nothing here is timed: each benchmark only has to run."""

import importlib
import inspect
import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
needs_asv = pytest.mark.skipif(shutil.which("asv") is None, reason="asv is not installed")


def asv(*args, timeout):
    return subprocess.run(["asv", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@needs_asv
def test_every_benchmark_suite_is_valid():
    res = asv("check", "--python=same", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def first_params(cls):
    """The first combination of a benchmark class's ``params`` (asv's conventions: none, one list, a list of lists)."""
    params = getattr(cls, "params", None)
    if not params:
        return ()
    if not all(isinstance(p, (list, tuple)) for p in params):
        params = [params]
    return next(itertools.product(*params))


@pytest.mark.parametrize("suite", SUITES)
def test_every_benchmark_runs_at_its_smallest_parameters(suite, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # as asv imports them: modules of the package benchmarks
    module = importlib.import_module(f"benchmarks.{suite}")
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]
    ran = 0
    for cls in classes:
        methods = [m for m in vars(cls) if m.startswith(("time_", "peakmem_", "track_", "mem_"))]
        if not methods:
            continue
        args = first_params(cls)
        for name in methods:
            bench = cls()
            getattr(bench, "setup", lambda *a: None)(*args)
            try:
                getattr(bench, name)(*args)
            finally:
                getattr(bench, "teardown", lambda *a: None)(*args)
            ran += 1
    assert ran, f"{suite} has no benchmarks"


@needs_asv
def test_asv_runs_the_cross_block_benchmark():
    asv("machine", "--yes", "--machine", "ci", timeout=60)
    res = asv("run", "--python=same", "--quick", "--machine", "ci", "--bench", "bench_kernels.CrossBlock",
              "--dry-run", "--show-stderr", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "failed" not in res.stdout.lower(), res.stdout


def test_large_n_same_time_subset_is_the_largest_predicted_within_the_time(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    large_n = importlib.import_module("benchmarks.compare_large_n")
    cal, n0, n_test = {"kernels_s": 2.0, "solve_s": 3.0}, 8000, 10_000
    assert large_n.exact_seconds(n0, n0, n_test, cal) == pytest.approx(5.0)
    for seconds in (1.0, 60.0, 300.0):
        n = large_n.same_time_n(seconds, 10**6, n0, n_test, cal)
        assert large_n.exact_seconds(n, n0, n_test, cal) <= seconds < large_n.exact_seconds(n + 1, n0, n_test, cal)
    assert large_n.same_time_n(1e9, 30_000, n0, n_test, cal) == 30_000  # memory, not time, limits it


def test_cholesky_comparison_factors_on_every_side(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    compare = importlib.import_module("benchmarks.compare_cholesky")
    assert compare.main(["--N", "300"]) == 0
    out = capsys.readouterr().out
    assert "failed" not in out
    for name in compare.SIDES:
        line = next(line for line in out.splitlines() if name in line)
        assert float(line.split("residual")[1]) < 1e-13
