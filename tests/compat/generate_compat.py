"""Compute the reference results of tests/compat/snippets.py with neural-tangents 0.6.5, once.

Run with the neural-tangents environment (jax 0.4.23, numpy 1.26)::

    /work/main/.venv-nt/bin/python tests/compat/generate_compat.py

Writes tests/compat/data/compat.npz: for each snippet ``name``, its inputs ``name/in/<key>``
(float64 NumPy draws from ``default_rng(seed)``, seed = the snippet's index in :data:`SEEDS`;
float32 for a snippet run without x64) and its results ``name/out/<key>``, plus a JSON entry
``spec``: per snippet its provenance, the jax mode it ran in (x64, legacy key splits), the PRNG key
integers its code uses, the seed of its inputs, which results were None, and the warnings
neural-tangents emitted. Re-running gives
the same file, byte for byte (fixed zip timestamps; neural-tangents on CPU is deterministic).
A snippet that raises under neural-tangents is an error of this script, never stored.
"""

from __future__ import annotations

import io
import json
import sys
import types
import warnings
import zipfile
from pathlib import Path

import numpy as onp

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
import neural_tangents as nt
from neural_tangents import predict, stax

sys.path.insert(0, str(Path(__file__).parent))
import snippets

OUT = Path(__file__).parent / "data" / "compat.npz"

#: PRNG key integers in each snippet's code (the literals of random.PRNGKey(...)).
KEYS = {
    "readme_infinite_kernel": [], "readme_predict_ensemble": [], "readme_empirical_predict": [1],
    "readme_linearize_taylor": [0, 1], "readme_monte_carlo": [2], "readme_jit_kernel": [],
    "infinite_fcn": [], "weight_space": [0], "function_space": [0], "empirical_ntk_implementations": [3],
    "empirical_ntk_jit": [4], "empirical_kernels": [5], "empirical_plain_jax": [],
    "cookbook_infinite": [10], "cookbook_train": [10], "cookbook_ensemble": [10], "phase_diagram": [],
    "predict_test_mse_gd": [7], "vmap_ensemble": [0], "predict_test_ensemble": [], "predict_gradient_descent": [8],
    "gp_inference": [], "kernel_fields": [], "kernel_composition": [], "residual_branching": [11, 12],
    "activations": [13], "activations_more": [13], "float32_readme": [0],
}


def _pair(rng, n1=10, n2=6, d=8):
    return {"x1": rng.standard_normal((n1, d)), "x2": rng.standard_normal((n2, d))}


def _classification(rng, n_train, n_test, d, classes):
    """Unit-norm-ish inputs and one-hot labels, as examples/datasets.py gives (flattened, centred)."""
    x_train = rng.standard_normal((n_train, d)) / onp.sqrt(d)
    x_test = rng.standard_normal((n_test, d)) / onp.sqrt(d)
    eye = onp.eye(classes)
    return {"x_train": x_train, "y_train": eye[rng.integers(0, classes, n_train)] - 0.1,
            "x_test": x_test, "y_test": eye[rng.integers(0, classes, n_test)] - 0.1}


def _cookbook(rng):
    """The cookbook's data: 5 noisy samples of sin on [-π, π] and 20 test points."""
    train_xs = rng.uniform(-onp.pi, onp.pi, (5, 1))
    test_xs = onp.linspace(-onp.pi, onp.pi, 20).reshape(20, 1)
    return {"train_xs": train_xs, "train_ys": onp.sin(train_xs) + 0.1 * rng.standard_normal((5, 1)),
            "test_xs": test_xs, "test_ys": onp.sin(test_xs)}


def _with_targets(rng, outputs, **kw):
    data = _pair(rng, **kw)
    data["y_train"] = rng.standard_normal((data["x1"].shape[0], outputs))
    return data


def _weight_space(rng):
    data = _classification(rng, 32, 16, 12, 10)
    data["y_train"] += 0.1  # one-hot targets for the cross-entropy loss
    data["y_test"] += 0.1
    data["permutations"] = onp.stack([rng.permutation(32) for _ in range(2)])
    return data


def _plain(rng):
    data = _pair(rng, d=5)
    data.update(w1=rng.standard_normal((5, 7)) / onp.sqrt(5), w2=rng.standard_normal((7, 3)) / onp.sqrt(7),
                b=0.1 * rng.standard_normal((3,)))
    return data


def _onehot(rng):
    data = _pair(rng)
    data["y_onehot"] = onp.eye(3)[rng.integers(0, 3, 10)]
    return data


#: snippet -> function of a Generator returning its inputs.
DATA = {
    "readme_infinite_kernel": lambda rng: _pair(rng, 12, 8, 20),
    "readme_predict_ensemble": lambda rng: _with_targets(rng, 1, n1=10, n2=8, d=20),
    "readme_empirical_predict": lambda rng: _with_targets(rng, 3),
    "readme_linearize_taylor": _pair,
    "readme_monte_carlo": _pair,
    "readme_jit_kernel": _pair,
    "infinite_fcn": lambda rng: _classification(rng, 32, 16, 12, 10),
    "weight_space": _weight_space,
    "function_space": lambda rng: _classification(rng, 32, 16, 12, 10),
    "empirical_ntk_implementations": lambda rng: _pair(rng, 2, 3, 6),
    "empirical_ntk_jit": lambda rng: _pair(rng, 4, 3, 6),
    "empirical_kernels": _pair,
    "empirical_plain_jax": _plain,
    "cookbook_infinite": _cookbook,
    "cookbook_train": _cookbook,
    "cookbook_ensemble": _cookbook,
    "phase_diagram": lambda rng: _pair(rng, 5, 1, 3),
    "predict_test_mse_gd": lambda rng: _with_targets(rng, 2),
    "vmap_ensemble": lambda rng: _with_targets(rng, 2),
    "predict_test_ensemble": lambda rng: _with_targets(rng, 1),
    "predict_gradient_descent": _onehot,
    "gp_inference": lambda rng: _with_targets(rng, 1),
    "kernel_fields": _pair,
    "kernel_composition": _pair,
    "residual_branching": _pair,
    "activations": _pair,
    "activations_more": _pair,
    "float32_readme": lambda rng: _with_targets(rng, 1),
}


def inputs(name, seed):
    data = DATA[name](onp.random.default_rng(seed))
    if not snippets.SNIPPETS[name][1]["x64"]:
        data = {k: v.astype(onp.float32) if v.dtype == onp.float64 else v for k, v in data.items()}
    return data


def write_npz(path, arrays):
    """np.savez_compressed with fixed zip timestamps, so that re-running changes no byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            onp.lib.format.write_array(buf, onp.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def main():
    assert set(DATA) == set(snippets.SNIPPETS) == set(KEYS), "every snippet needs its inputs and keys"
    arrays, spec = {}, {"neural_tangents": nt.__version__,
                        "jax": __import__("jax").__version__, "snippets": {}}
    for seed, name in enumerate(snippets.SNIPPETS):
        data = inputs(name, seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, error = snippets.run(name, nt, stax, predict, data)
        if error is not None:
            raise RuntimeError(f"snippet {name} failed under neural-tangents") from error
        meta = snippets.SNIPPETS[name][1]
        spec["snippets"][name] = {**meta, "seed": seed, "keys": KEYS[name],
                                  "none": sorted(k for k, v in out.items() if v is None),
                                  "warnings": sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}"
                                                      for w in caught}),
                                  "outputs": list(out)}
        arrays.update({f"{name}/in/{k}": v for k, v in data.items()})
        arrays.update({f"{name}/out/{k}": v for k, v in out.items() if v is not None})
        print(f"{name}: {len(out)} results")
    arrays["spec"] = onp.array(json.dumps(spec, indent=1, sort_keys=True))
    write_npz(OUT, arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
