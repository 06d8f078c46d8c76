"""Dense(s=...) in the 'standard' parameterization, and Dense on (N, H, d) inputs, by neural-tangents 0.6.5.

Run once with the neural-tangents environment (../shared/peers/README.md):
    .venv-nt/bin/python tests/compat/generate_dense.py
writes tests/compat/data/dense_s.npz (read by tests/test_kernel_api.py): kernels, JAX-key params and
outputs of a standard-parameterization network with width scalings s, and params/outputs of a Dense
network on inputs with a location axis.
"""

import pathlib
import sys
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from jax import random  # noqa: E402
from neural_tangents import stax  # noqa: E402

r = np.random.default_rng(3)
x, y = r.standard_normal((4, 6)), r.standard_normal((3, 6))
net = stax.serial(stax.Dense(8, 1.3, 0.2, parameterization="standard", s=(1, 2)), stax.Erf(),
                  stax.Dense(5, 0.9, 0.1, parameterization="standard", s=(2, 3)), stax.Relu(),
                  stax.Dense(1, 1.1, 0.3, parameterization="standard", s=(3, 1)))
k = net[2](x, y)
_, params = net[0](random.PRNGKey(4), x.shape)
f = net[1](params, x)
x3 = r.standard_normal((2, 3, 6))
net3 = stax.serial(stax.Dense(4, 1.2, 0.3), stax.Relu(), stax.Dense(2, 1.0, 0.5))
_, p3 = net3[0](random.PRNGKey(5), x3.shape)
out = dict(x=x, y=y, nngp=k.nngp, ntk=k.ntk, f=f, x3=x3, f3=net3[1](p3, x3))
for i, (W, b) in enumerate(p for p in params if p != ()): out[f"W{i}"], out[f"b{i}"] = W, b
for i, (W, b) in enumerate(p for p in p3 if p != ()): out[f"W3_{i}"], out[f"b3_{i}"] = W, b
np.savez(pathlib.Path(__file__).parent / "data" / "dense_s.npz", **out)
