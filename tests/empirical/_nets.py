"""Networks shared by the tests of fastntk.empirical."""

from conftest import RTOL

from fastntk import stax

TOL = RTOL["empirical"]
ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf, "gelu": stax.Gelu, "tanh": stax.Tanh,
               "sin": lambda: stax.Sin(1.2, 0.7, 0.3), "leaky": lambda: stax.LeakyRelu(0.1)}


def mlp(widths, out_dim, act="relu", W_std=1.5, b_std=0.1, parameterization="ntk"):
    layers = []
    for m in widths:
        layers += [stax.Dense(m, W_std, b_std, parameterization=parameterization), ACTIVATIONS[act]()]
    return stax.serial(*layers, stax.Dense(out_dim, W_std, b_std, parameterization=parameterization))
