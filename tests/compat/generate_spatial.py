"""Kernels of inputs with location axes, (N, H, W, d), through fully-connected layers, by neural-tangents 0.6.5.

Run once with the neural-tangents environment (../shared/peers/README.md):
    .venv-nt/bin/python tests/compat/generate_spatial.py
writes tests/compat/data/spatial.npz (read by tests/test_kernel_api.py).
"""

import pathlib
import sys
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

rng = np.random.default_rng(1)
x, y = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((2, 2, 4, 5))
kernel_fn = stax.serial(stax.Dense(7, 1.2, 0.1), stax.Relu(), stax.Dense(1, 1.2, 0.1))[2]
out = {"x": x, "y": y}
for tag, kwargs in (("full", {}), ("diag", {"diagonal_spatial": True})):
    k = kernel_fn(x, y, **kwargs)
    out |= {f"{tag}_{f}": np.asarray(getattr(k, f)) for f in ("nngp", "ntk", "cov1", "cov2")}
k = kernel_fn(x, None)
out |= {"sym_nngp": np.asarray(k.nngp), "sym_ntk": np.asarray(k.ntk), "sym_cov1": np.asarray(k.cov1)}
np.savez(pathlib.Path(__file__).parent / "data" / "spatial.npz", **out)
