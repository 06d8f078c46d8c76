"""Shared plumbing of the side-by-side scripts (compare_*.py): fastntk against its peers.

Each script runs every side in a fresh subprocess: the driver (``python benchmarks/compare_x.py``)
re-executes the script with ``--worker`` — under this Python for fastntk, NumPy and torch, under
neural-tangents' own venv (``NT_PYTHON``: numpy 1.26, jax 0.4.23, no fastntk; see
../shared/peers/README.md) for neural-tangents — and reads back the worker's last stdout line, JSON.
This module holds what both ends share: where that venv is, how a worker measures itself (time,
CPU time, peak RSS from /proc/self/status), how neural-tangents is imported without TensorFlow,
and how the driver runs a worker (address-space limit, timeout, errors reported, not raised).

Standard library and NumPy only, so that it imports in either interpreter; not an asv suite
(asv imports it as ``benchmarks.peers`` and finds no benchmarks in it).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NT_PYTHON = ROOT / ".venv-nt" / "bin" / "python"


#: Seconds of rest before a timed call that follows other threaded work in the same process: longer than
#: idle threads spin after a call (OpenBLAS's, 2^28 cycles, ~0.1 s; torch's OpenMP pool), so that no call
#: is timed beside the spinning threads of the one before.
PAUSE = 0.25


def rested(fn):
    """fn()'s result and wall seconds, timed after a rest of ``PAUSE`` seconds."""
    time.sleep(PAUSE)
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


# --------------------------------------------------------------------------- worker side
def rss_kib(field):
    """A memory field of this process from /proc/self/status (VmRSS, VmHWM, RssAnon, ...), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_s():
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def import_neural_tangents(x64):
    """(jax, neural_tangents), with ``jax_enable_x64`` set to ``x64`` before neural_tangents loads."""
    # neural_tangents.experimental imports TensorFlow; stax, empirical and predict do not need it.
    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    import jax

    jax.config.update("jax_enable_x64", x64)
    import neural_tangents

    return jax, neural_tangents


def measure(fn, x, repeats, keep_first):
    """Run ``fn(x)`` once, read the peak RSS, then ``repeats`` more times; the best is kept.

    ``keep_first(out)`` sees the first result (to save a sample of it) and returns a dict merged
    into the answer; each result is freed before the next call. Returns first_s, best_s, cpu_s
    (CPU time of the best call; None when ``repeats`` is 0 and the first call is the best),
    times_s, rss_before and peak_rss (bytes).
    """
    rss0 = rss_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn(x)
    first = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    kept = keep_first(out)
    del out
    times, cpus = [first], [None]
    for _ in range(repeats):
        c0, t0 = cpu_s(), time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t0)
        cpus.append(cpu_s() - c0)
        del out
    best = int(np.argmin(times[1:])) + 1 if repeats else 0
    return {"first_s": first, "best_s": times[best], "cpu_s": cpus[best], "times_s": times,
            "rss_before": rss0 * 1024, "peak_rss": peak * 1024, **kept}


# --------------------------------------------------------------------------- driver side
def print_table(title, head, results, row):
    """Print ``title``, the column heads ``head`` and a rule, then a line per side of ``results``:
    the side's name and ``row(side, result)``, or "failed (<error>)" for an {'error': ...} result."""
    print(f"\n{title}")
    print(head)
    print("-" * len(head))
    for side, r in results.items():
        print(f"{side:<16} " + (f"failed ({r['error']})" if "error" in r else row(side, r)))


def _limit_memory(gib):
    def set_limit():
        lim = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    return set_limit


def run_worker(cmd, timeout=None, mem_limit_gib=None, prefer_error_lines=True, width=200):
    """Run a worker subprocess; returns the JSON dict of its last stdout line, or {'error': ...}.

    The worker gets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, an address-space limit of
    ``mem_limit_gib`` GiB (None: no limit; an out-of-memory worker then fails alone instead of
    starving the machine) and ``timeout`` seconds (None: no limit). On failure the error is
    ``rc=<code>: <stderr line>``: the last stderr line, or with ``prefer_error_lines`` the last
    one that mentions an error, cut to ``width`` characters (None: whole).
    """
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    preexec = None if mem_limit_gib is None else _limit_memory(mem_limit_gib)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, preexec_fn=preexec,
                           check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines() or ["(no stderr)"]
        if prefer_error_lines:
            lines = [line for line in lines if "Error" in line or "error" in line] or lines
        return {"error": f"rc={p.returncode}: {lines[-1][:width]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])
