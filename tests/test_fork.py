"""A fork()ed child works after the parent has used the thread pools (DESIGN §3).

GNU OpenMP (fastntk._core and Numba's 'omp' threading layer share one libgomp) and
OpenBLAS keep thread pools that a child inherits without their threads. Each case runs in
a fresh interpreter that computes a kernel, forks, and checks the child's kernel against
its own bit for bit; a hang fails the test at the timeout instead of stopping the suite.
"""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import child_process

TIMEOUT_S = 120

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys
    import numpy as np
    from fastntk import stax

    pool, start = sys.argv[1:]
    x = np.random.default_rng(0).standard_normal((400, 10))
    y = np.random.default_rng(1).standard_normal((600, 600))  # a gemm OpenBLAS threads
    if pool == "openmp":  # closed-form layers: the OpenMP pass of fastntk._core
        kernel_fn = stax.fc_network(2)[2]
    else:  # a quadrature activation: Numba's parallel kernel (and _core for the Dense layers)
        kernel_fn = stax.serial(stax.Dense(512, 1.0, 0.1), stax.Tanh(), stax.Dense(1))[2]

    def compute(_=None):
        if pool == "blas":
            return y @ y
        k = kernel_fn(x, None)
        return np.stack([k.nngp, k.ntk])

    def fork_and_compute():
        pid = os.fork()
        if pid == 0:
            os._exit(0 if np.array_equal(compute(), expected) else 3)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    expected = compute()
    if start == "os.fork":
        ok = fork_and_compute()
    elif start == "nested":  # a child that forks again
        pid = os.fork()
        if pid == 0:
            os._exit(0 if fork_and_compute() and np.array_equal(compute(), expected) else 3)
        ok = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    else:
        with multiprocessing.get_context("fork").Pool(2) as workers:
            ok = all(np.array_equal(r, expected) for r in workers.map(compute, range(2)))
    if not ok:
        sys.exit("the child's result differs from the parent's, or the child failed")
    if not np.array_equal(compute(), expected):  # the parent's pools still work
        sys.exit("the parent's result changed after fork()")
    """
)


def run_script(*args):
    # Python >= 3.12 warns that fork() in a threaded process may deadlock: the point here.
    cmd = [sys.executable, "-W", "ignore::DeprecationWarning", "-c", SCRIPT, *args]
    proc = subprocess.Popen(cmd, **child_process(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked children too
        out = None
        proc.communicate()
    if out is None:
        pytest.fail(f"{args}: no result within {TIMEOUT_S} s (a deadlock after fork())")
    assert proc.returncode == 0, out.decode(errors="replace")


@pytest.mark.parametrize("start", ["os.fork", "multiprocessing"])
@pytest.mark.parametrize("pool", ["openmp", "numba", "blas"])
def test_child_after_parent_used_pool(pool, start):
    run_script(pool, start)


@pytest.mark.parametrize("pool", ["openmp", "numba"])
def test_grandchild(pool):
    run_script(pool, "nested")
