"""neural-tangents 0.6.5's numbers for tests/test_jax_interop.py: JAX functions, keys and derivatives.

Run once with the neural-tangents environment (jax 0.4.23, float64):
    .venv-nt/bin/python tests/compat/generate_jax_interop.py
writes tests/compat/data/jax_interop.npz:

* ``mlp_*``: a plain JAX function f(params, x) = tanh(x W + b) V (params a dict), its
  ``linearize`` and ``taylor_expand`` (degrees 2, 3) at shifted parameters, its empirical NNGP and
  NTK for three axis choices, and ``empirical_ntk_vp_fn`` on a cotangent;
* ``mc_*``: ``monte_carlo_kernel_fn`` of a stax network from PRNGKey(5), 1 and 3 samples;
* ``grad_*``: ``jax.grad`` of infinite-width kernels with respect to W_std, b_std and x1.
"""

import json
import pathlib
import sys
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
from neural_tangents import stax

rng = np.random.default_rng(11)
x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
out = {"x1": x1, "x2": x2}

# --------------------------------------------------------------------------- a plain JAX function
params0 = {"W": rng.standard_normal((3, 6)), "b": rng.standard_normal((6,)), "V": rng.standard_normal((6, 2))}
dparams = {k: 0.1 * rng.standard_normal(v.shape) for k, v in params0.items()}


def mlp(params, x):
    return jnp.tanh(x @ params["W"] + params["b"]) @ params["V"]


p0 = {k: jnp.asarray(v) for k, v in params0.items()}
p1 = {k: jnp.asarray(params0[k] + dparams[k]) for k in params0}
out |= {f"mlp_p0_{k}": v for k, v in params0.items()} | {f"mlp_dp_{k}": v for k, v in dparams.items()}
out["mlp_lin"] = np.asarray(nt.linearize(mlp, p0)(p1, x1))
for degree in (2, 3):
    out[f"mlp_taylor{degree}"] = np.asarray(nt.taylor_expand(mlp, p0, degree)(p1, x1))
for tag, axes in (("trace", {}), ("full", {"trace_axes": ()}), ("diag", {"trace_axes": (), "diagonal_axes": (-1,)})):
    k = nt.empirical_kernel_fn(mlp, **axes)(x1, x2, None, p0)
    out[f"mlp_nngp_{tag}"], out[f"mlp_ntk_{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
cotangents = rng.standard_normal((4, 2))
out["mlp_ct"] = cotangents
out["mlp_ntk_vp"] = np.asarray(nt.empirical_ntk_vp_fn(mlp, x1, x2, p0)(cotangents))

# --------------------------------------------------------------------------- Monte Carlo from a key
init_fn, apply_fn, _ = stax.serial(stax.Dense(16, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(3, W_std=1.2))
mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(5), [1, 3])
for n, k in zip((1, 3), mc(x1, x2, ("nngp", "ntk"))):
    out[f"mc_nngp_{n}"], out[f"mc_ntk_{n}"] = np.asarray(k.nngp), np.asarray(k.ntk)


# --------------------------------------------------------------------------- derivatives of kernel_fn
def phase(W, b, get):
    kernel_fn = stax.serial(stax.Dense(4, W_std=W, b_std=b), stax.Erf(), stax.Dense(4, W_std=W, b_std=b),
                            stax.Relu(), stax.Dense(1, W_std=W, b_std=b))[2]
    return kernel_fn(x1, x2, get).sum()


for get in ("nngp", "ntk"):
    out[f"grad_W_b_{get}"] = np.asarray(jax.grad(phase, (0, 1))(1.3, 0.2, get))
_, _, kernel_fn = stax.serial(stax.Dense(4, 1.4, 0.1), stax.Gelu(), stax.Dense(4, 1.4, 0.1), stax.Relu(),
                              stax.Dense(1, 1.4, 0.1))
for get in ("nngp", "ntk"):
    out[f"grad_x1_{get}"] = np.asarray(jax.grad(lambda a, get=get: kernel_fn(a, x2, get).sum())(x1))
spec = {"nt_version": nt.__version__, "jax_version": jax.__version__}
np.savez(pathlib.Path(__file__).parent / "data" / "jax_interop.npz", spec=json.dumps(spec), **out)
