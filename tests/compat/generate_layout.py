"""Dense layers with other batch and channel axes (neural-tangents' batch_axis, channel_axis), by neural-tangents 0.6.5.

Run once with the neural-tangents environment (../shared/peers/README.md):
    .venv-nt/bin/python tests/compat/generate_layout.py
writes tests/compat/data/layout.npz (read by tests/test_kernel_api.py): for inputs (d, N) with
batch_axis=1, channel_axis=0, and (N, d, H) with channel_axis=1, the JAX-key params, the outputs and
the kernels.
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

rng = np.random.default_rng(7)
cases = {
    "t": (dict(batch_axis=1, channel_axis=0), rng.standard_normal((5, 4)), rng.standard_normal((5, 3))),
    "mid": (dict(batch_axis=0, channel_axis=1), rng.standard_normal((3, 5, 2)), rng.standard_normal((2, 5, 2))),
}
out = {}
for name, (axes, x1, x2) in cases.items():
    net = stax.serial(stax.Dense(6, 1.3, 0.2, **axes), stax.Relu(), stax.Dense(6, 1.1, 0.1, **axes), stax.Erf(),
                      stax.Dense(2, 0.9, 0.3, parameterization="standard", **axes))
    out_shape, params = net[0](random.PRNGKey(3), x1.shape)
    k = net[2](x1, x2)
    out |= {f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/f": net[1](params, x1), f"{name}/nngp": k.nngp,
            f"{name}/ntk": k.ntk, f"{name}/cov1": k.cov1, f"{name}/out_shape": np.array(out_shape)}
    for i, (W, b) in enumerate(p for p in params if p != ()):
        out[f"{name}/W{i}"], out[f"{name}/b{i}"] = W, b
np.savez(pathlib.Path(__file__).parent / "data" / "layout.npz", **out)
