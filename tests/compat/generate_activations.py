"""Generate tests/compat/data/activations.npz: neural-tangents 0.6.5's kernels and finite
networks for its elementwise activations beyond the ReLU family, erf, sin and GELU.

Run once with the neural-tangents environment (jax 0.4.23, float64)::

    /path/to/nt-venv/bin/python tests/compat/generate_activations.py

Each case is a ``stax.serial`` of L × (Dense(8) + activation) + Dense(1); the file holds, per
case i, the inputs ``i/x1`` (5, 4) and ``i/x2`` (4, 4), neural-tangents' ``i/nngp`` and
``i/ntk`` of ``kernel_fn(x1, x2)``, and (where the layer has a finite network) the params
``i/p{j}`` drawn by ``init_fn(PRNGKey(i), x1.shape)`` (W and b of each Dense in order) and
``apply_fn(params, x1)`` as ``i/apply``. ``spec`` (JSON) lists the cases.
RectifiedMonomial cases have depth 1 (see main). Hermite cases get inputs of unit variance, x·x/d = 1, and W_std = 1, b_std = 0, so that every
Hermite layer sees Σ₁₁ = Σ₂₂ = 1, the inputs neural-tangents' Hermite kernel assumes.
"""

import json
import sys
import types
from pathlib import Path

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
from neural_tangents import stax

#: (activation expression, has a finite network)
ACTIVATIONS = [
    ("Exp()", True), ("Exp(0.8, 0.6)", True),
    ("ExpNormalized()", False), ("ExpNormalized(1.3, -0.5, True)", False),
    ("Gaussian()", True), ("Gaussian(1.2, -0.7)", True),
    ("Rbf()", True), ("Rbf(0.7)", True),
    ("Sign()", True), ("Gabor()", True), ("Cos(0.9, 1.2, -0.2)", True),
    *[(f"Monomial({n})", True) for n in range(6)],
    *[(f"RectifiedMonomial({n})", True) for n in range(5)],
    ("Polynomial([0.1, 0.4])", True), ("Polynomial([0.3, -1.0, 0.5, 0.2])", True),
    ("Polynomial([0.3, -1.0, 0.5, 0.2, 0.1, -0.05])", True),
    *[(f"Hermite({n})", True) for n in range(5)],
]

#: (W_std, b_std, parameterization=parameterization), cycled over the cases with depths 1, 2, 3.
NETS = [(1.0, 0.1, "ntk"), (1.3, 0.2, "standard"), (0.9, None, "ntk"), (1.1, 0.05, "standard")]


def main():
    arrays, cases = {}, []
    for i, (expr, finite) in enumerate(ACTIVATIONS):
        # neural-tangents' RectifiedMonomial kernel is NaN at coincident points (its J_n divides by
        # sin θ = 0), so its per-point variances are NaN and a second layer's kernels too: depth 1.
        depth = 1 if expr.startswith("RectifiedMonomial") else 1 + i % 3
        W_std, b_std, parameterization = NETS[i % len(NETS)]
        rng = np.random.default_rng(i)
        x1, x2 = 0.6 * rng.standard_normal((5, 4)), 0.6 * rng.standard_normal((4, 4))
        if expr.startswith("Hermite"):
            W_std, b_std = 1.0, 0.0
            x1, x2 = (x / np.sqrt((x * x).mean(1, keepdims=True)) for x in (x1, x2))
        act = eval(f"stax.{expr}")  # the literal expressions above
        layers = []
        for _ in range(depth):
            layers += [stax.Dense(8, W_std, b_std, parameterization=parameterization), act]
        init_fn, apply_fn, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std, b_std, parameterization=parameterization))
        k = kernel_fn(x1, x2, ("nngp", "ntk"))
        arrays.update({f"{i}/x1": x1, f"{i}/x2": x2, f"{i}/nngp": np.asarray(k.nngp), f"{i}/ntk": np.asarray(k.ntk)})
        if finite:
            _, params = init_fn(jax.random.PRNGKey(i), x1.shape)
            flat = [np.asarray(a) for layer in params for a in layer if a is not None]
            arrays.update({f"{i}/p{j}": a for j, a in enumerate(flat)})
            arrays[f"{i}/apply"] = np.asarray(apply_fn(params, x1))
        cases.append({"activation": expr, "depth": depth, "width": 8, "W_std": W_std, "b_std": b_std,
                      "parameterization": parameterization, "finite": finite})
        for name in ("nngp", "ntk"):
            assert np.isfinite(arrays[f"{i}/{name}"]).all(), (expr, name)
    spec = {"cases": cases, "versions": {"neural_tangents": "0.6.5", "jax": jax.__version__,
                                         "numpy": np.__version__}}
    out = Path(__file__).parent / "data" / "activations.npz"
    np.savez_compressed(out, spec=np.array(json.dumps(spec)), **arrays)
    print(f"{out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
