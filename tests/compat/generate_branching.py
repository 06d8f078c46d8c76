"""Reference values of neural-tangents 0.6.5 for branching networks (tests/test_branching.py).

Run once with neural-tangents' own environment (jax 0.4.23, float64):

    /path/to/nt-venv/bin/python tests/compat/generate_branching.py

It writes tests/compat/data/branching.npz: for every network of :func:`networks` the NNGP and
NTK of (x1, x1) and (x1, x2), the params neural-tangents draws from PRNGKey(1) (their array
leaves in ``jax.tree_util`` order), the outputs of apply_fn on x1 with those params and
rng=PRNGKey(2), and the empirical NTK of the 'emp_' networks; plus the kernels of two
networks composed through a Kernel and the errors neural-tangents raises.
:func:`networks` takes the ``stax`` module, so the tests build the same networks with fastntk's.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np

X1 = np.random.default_rng(7).standard_normal((5, 4))
X2 = np.random.default_rng(8).standard_normal((3, 4))


def networks(stax):
    """name -> layer, built from ``stax`` (neural-tangents' or fastntk's)."""
    def block(width, parameterization="ntk"):
        return stax.serial(stax.FanOut(2), stax.parallel(stax.serial(
            stax.Relu(), stax.Dense(width, 1.2, 0.2, parameterization=parameterization)), stax.Identity()),
            stax.FanInSum())

    return {
        "residual": stax.serial(stax.Dense(4, 1.5, 0.1), block(4), stax.Relu(), stax.Dense(1, 0.9, 0.05)),
        "residual_standard": stax.serial(stax.Dense(6, 1.5, 0.1, parameterization="standard"),
                                         block(6, "standard"), stax.Erf(), stax.Dense(2, 1.1, None,
                                                                                      parameterization="standard")),
        "prod": stax.serial(stax.Dense(3, 1.2, 0.3), stax.FanOut(2),
                            stax.parallel(stax.Dense(3, 1.3, 0.1), stax.serial(stax.Erf(), stax.Dense(3, 0.8, 0.2))),
                            stax.FanInProd(), stax.Dense(1, 1.0, 0.1)),
        "prod3": stax.serial(stax.Dense(3), stax.FanOut(3), stax.parallel(stax.Dense(3, 1.3, 0.1), stax.Identity(),
                                                                        stax.serial(stax.Relu(), stax.Dense(3))),
                             stax.FanInProd(), stax.Dense(2, 1.0, 0.1)),
        "concat": stax.serial(stax.Dense(3, 1.1, 0.1), stax.FanOut(3),
                              stax.parallel(stax.Dense(2, 1.4, 0.2), stax.serial(stax.Relu(), stax.Dense(5)),
                                            stax.Identity()),
                              stax.FanInConcat(), stax.Dense(2, 1.1, 0.3), stax.Gelu(), stax.Dense(1)),
        "concat_equal": stax.serial(stax.Dense(3), stax.FanOut(2),
                                    stax.parallel(stax.Dense(3, 1.4, 0.2), stax.serial(stax.Relu(), stax.Dense(3))),
                                    stax.FanInConcat(axis=1), stax.Dense(1, 1.1, 0.3)),
        "nested": stax.serial(stax.Dense(4, 1.3, 0.2), stax.FanOut(2), stax.parallel(
            stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(4, 0.7), stax.serial(stax.Relu(), stax.Dense(4))),
                        stax.FanInSum(), stax.Sin(), stax.Dense(4, 1.1, 0.1)),
            stax.Identity()), stax.FanInSum(), stax.Relu(), stax.Dense(1)),
        "repeat": stax.serial(stax.Dense(4, 1.3, 0.1), stax.repeat(block(4), 3), stax.Relu(), stax.Dense(1)),
        "dropout": stax.serial(stax.Dense(4, 1.5, 0.1), stax.Dropout(0.6), stax.Dense(3, 1.2, 0.1), stax.Relu(),
                               stax.Dense(1)),
        "dropout_test": stax.serial(stax.Dense(4, 1.5, 0.1), stax.Dropout(0.6, "test"), stax.Relu(),
                                    stax.Dense(1)),
        "flatten": stax.serial(stax.Flatten(), stax.Dense(4, 1.2, 0.1), stax.Relu(), stax.Flatten(),
                               stax.Dense(1)),
        "emp_residual": stax.serial(stax.Dense(16, 1.5, 0.1), block(16), stax.Relu(),
                                    stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Dense(8, 1.1, 0.2)),
                                    stax.FanInProd(), stax.Dense(2, 0.9, 0.05)),
    }


def composed(stax):
    """(first, second): second.kernel_fn(first.kernel_fn(x1, x2)) continues the first network."""
    return (stax.serial(stax.Dense(4, 1.4, 0.1), stax.Relu(), stax.Dense(3, 1.2, 0.2)),
            stax.serial(stax.Relu(), stax.Dense(3, 1.1, 0.1), stax.FanOut(2),
                        stax.parallel(stax.Dense(3), stax.Identity()), stax.FanInSum(), stax.Dense(1)))


#: Networks neural-tangents refuses: name -> layer builder (the message is stored).
def refused(stax):
    return {
        "act_on_input": stax.serial(stax.Relu(), stax.Dense(1)),
        "sum_of_inputs": stax.serial(stax.FanOut(2), stax.FanInSum()),
        "act_after_concat": stax.serial(stax.Dense(2), stax.FanOut(2), stax.parallel(stax.Dense(2), stax.Dense(2)),
                                        stax.FanInConcat(), stax.Relu()),
        "act_after_dropout": stax.serial(stax.Dense(2), stax.Dropout(0.5), stax.Relu()),
        "act_after_flatten": stax.serial(stax.Dense(2), stax.Flatten(), stax.Relu()),
        "act_after_prod": stax.serial(stax.Dense(2), stax.FanOut(2), stax.parallel(stax.Dense(2), stax.Dense(2)),
                                      stax.FanInProd(), stax.Relu()),
        "sum_of_widths": stax.serial(stax.Dense(2), stax.FanOut(2), stax.parallel(stax.Dense(2), stax.Dense(3)),
                                     stax.FanInSum()),
    }


def main():
    sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))
    import jax

    jax.config.update("jax_enable_x64", True)
    import warnings

    from neural_tangents import empirical_ntk_fn, stax

    warnings.simplefilter("ignore")
    out = {"x1": X1, "x2": X2}
    for name, (init_fn, apply_fn, kernel_fn) in networks(stax).items():
        for tag, x2 in (("11", None), ("12", X2)):
            k = kernel_fn(X1, x2, ("nngp", "ntk"))
            out[f"{name}/nngp{tag}"], out[f"{name}/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
        _, params = init_fn(jax.random.PRNGKey(1), X1.shape)
        for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
            out[f"{name}/param{i}"] = np.asarray(leaf)
        out[f"{name}/apply"] = np.asarray(apply_fn(params, X1, rng=jax.random.PRNGKey(2)))
        if name.startswith("emp_"):
            out[f"{name}/empirical"] = np.asarray(empirical_ntk_fn(apply_fn, trace_axes=())(X1, X2, params))
    first, second = composed(stax)
    for tag, x2 in (("11", None), ("12", X2)):
        k = second[2](first[2](X1, x2))
        out[f"composed/nngp{tag}"], out[f"composed/ntk{tag}"] = np.asarray(k.nngp), np.asarray(k.ntk)
    for name, layer in refused(stax).items():
        try:
            layer[2](X1, None, ("nngp", "ntk"))
        except Exception as e:  # noqa: BLE001 - the message is the data
            out[f"refused/{name}"] = np.array(f"{type(e).__name__}: {e}")
        else:
            raise AssertionError(f"neural-tangents accepted {name}")
    path = Path(__file__).parent / "data" / "branching.npz"
    np.savez_compressed(path, **out)
    print(f"wrote {path}: {len(out)} arrays")


if __name__ == "__main__":
    main()
