"""neural-tangents-compatible network combinators (fully-connected part).

Every layer and ``serial`` return ``(init_fn, apply_fn, kernel_fn)``, as
``neural_tangents.stax`` does, with the same conventions and numbers::

    from fastntk import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ('nngp', 'ntk'))   # k.nngp, k.ntk: (N1, N2)

Parameters are NumPy arrays: a Dense layer holds ``(W, b)`` with W of shape
(fan_in, out_dim) and b of shape (1, out_dim) (``b = None`` when ``b_std=None``);
an activation holds ``()``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import activations as _act
from ._validation import check_block_rows, check_get, check_pair, check_positive
from ._types import Kernel, kernel_tuple
from .kernels import infinite_kernels

__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "Cos",
    "Dense",
    "Elementwise",
    "ElementwiseNumerical",
    "Erf",
    "Gelu",
    "Identity",
    "Kernel",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Silu",
    "Sin",
    "Swish",
    "Softplus",
    "Tanh",
    "fc_network",
    "serial",
]


@dataclass(frozen=True)
class _DenseSpec:
    out_dim: int
    W_std: float
    b_std: float | None
    parameterization: str


class Layer(NamedTuple):
    """``(init_fn, apply_fn, kernel_fn)`` of a network; each carries it as ``.network``."""

    init_fn: object
    apply_fn: object
    kernel_fn: object


def _rng(rng):
    """A numpy Generator from a seed, a Generator, a SeedSequence or a jax-style key array."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (np.random.SeedSequence, numbers.Integral)) or rng is None:
        return np.random.default_rng(rng)
    key = np.asarray(rng)
    if key.dtype.kind in "ui" and key.ndim == 1:
        return np.random.default_rng([int(k) for k in key])
    raise TypeError(f"rng must be an int seed, a numpy Generator or a key array; got {type(rng).__name__}")


class _Network:
    """A fully-connected network: a tuple of _DenseSpec and Activation items."""

    def __init__(self, items):
        self.items = tuple(it for it in items if not (isinstance(it, _act.Activation) and it.layer == ()))

    def spec(self):
        """The network spec read by the kernel recursion (tuple of layer tuples)."""
        prev = "input"
        for it in self.items:
            if isinstance(it, _act.Activation):
                if prev != "dense":
                    raise ValueError(
                        f"unsupported layer order: activation {it.name!r} follows {prev!r}; the dual kernels "
                        "need Gaussian pre-activations, so every activation must follow a Dense layer"
                    )
                prev = it.name
            else:
                prev = "dense"
        return tuple(
            ("dense", it.W_std, it.b_std, it.parameterization, it.out_dim)
            if isinstance(it, _DenseSpec)
            else it.layer
            for it in self.items
        )

    # --- finite network -------------------------------------------------
    def init(self, rng, input_shape):
        gen = _rng(rng)
        shape = tuple(input_shape)
        params = []
        for it in self.items:
            if isinstance(it, _DenseSpec):
                fan_in = shape[-1]
                W = gen.standard_normal((fan_in, it.out_dim))
                b = None if it.b_std is None else gen.standard_normal((1, it.out_dim))
                if it.parameterization == "standard":  # init_fn scales; apply_fn does not
                    W *= it.W_std / np.sqrt(fan_in)
                    b = None if b is None else b * it.b_std
                params.append((W, b))
                shape = (*shape[:-1], it.out_dim)
            else:
                params.append(())
        return shape, params

    def apply(self, params, x):
        h = np.asarray(x)
        if len(params) != len(self.items):
            raise ValueError(f"params must have one entry per layer ({len(self.items)}); got {len(params)}")
        first = next((p for it, p in zip(self.items, params) if isinstance(it, _DenseSpec)), None)
        if first is not None and h.shape[-1] != first[0].shape[0]:
            raise ValueError(f"x has {h.shape[-1]} features but the Dense layer expects {first[0].shape[0]}")
        return forward(self.items, params, h)[0]


def dense_coefs(it, W):
    """(c, β) with z = c·h W + β·b for the Dense spec ``it`` and its weights W (fan_in, out).

    'ntk': c = W_std/√fan_in, β = b_std (W, b are the raw N(0, 1) draws, neural-tangents'
    Dense.apply_fn); 'standard': c = β = 1 (init_fn already scaled W and b).
    """
    if it.parameterization == "ntk":
        return float(it.W_std / np.sqrt(W.shape[0])), float(it.b_std or 0.0)
    return 1.0, 1.0


def forward(items, params, x):
    """Outputs of the network ``items`` and the input of every item: ``(f, [h_0, h_1, ...])``."""
    inputs, h = [], x
    for it, p in zip(items, params):
        inputs.append(h)
        if isinstance(it, _DenseSpec):
            W, b = p
            c, beta = dense_coefs(it, W)
            h = h @ W if c == 1.0 else c * (h @ W)
            if b is not None:
                h = h + (beta * b if beta != 1.0 else b)
        else:
            h = np.asarray(it.fn(h), dtype=h.dtype)
    return h, inputs


class _KernelFn:
    """``kernel_fn(x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False)``."""

    def __init__(self, network):
        self.network = network
        self.__doc__ = _KERNEL_FN_DOC

    def __call__(self, x1, x2=None, get=None, *, diagonal=False, out=None, dtype=None, progress=False,
                 block_rows=None):
        names = check_get(get)
        x1, x2, dtype = check_pair(x1, x2, dtype)
        if diagonal and x2 is not None:
            raise ValueError("diagonal=True gives Σ(x, x) and Θ(x, x) of x1 alone; x2 must be None")
        outs = _check_out(out, get, names, (x1.shape[0], (x1 if x2 is None else x2).shape[0]), dtype)
        if diagonal and outs:
            raise ValueError("out is for full (N1, N2) kernels; it cannot be used with diagonal=True")
        check_block_rows(block_rows)
        res = infinite_kernels(x1, x2, self.network.spec(), names, dtype, diagonal=diagonal, out=outs,
                               block_rows=block_rows, progress=progress)
        if get is None:
            return Kernel(res["nngp"], res["ntk"], res["cov1"], res["cov2"])
        if isinstance(get, str):
            return res[get]
        return kernel_tuple(names)(*(res[n] for n in names))


_KERNEL_FN_DOC = """Infinite-width NNGP Σ and NTK Θ of the network.

Parameters
----------
x1 : ndarray of shape (N1, d), float32 or float64
    First batch of inputs. Rows with zero norm give finite kernels, never NaN.
x2 : ndarray of shape (N2, d) or None
    Second batch; None means x1 (the result is then symmetric and half the work).
get : None, 'nngp', 'ntk' or a tuple of them
    None returns a :class:`Kernel` (nngp, ntk, cov1, cov2); a string, that array; a
    tuple, a namedtuple with those fields in that order.
diagonal : bool, keyword-only
    Return only Σ(x1ᵢ, x1ᵢ) and Θ(x1ᵢ, x1ᵢ), shape (N1,): O(N1·depth) work and memory.
out : ndarray, tuple or dict of them, keyword-only
    Preallocated results of shape (N1, N2) and the result dtype with unit-stride rows,
    e.g. ``np.memmap``; one array when ``get`` is a string, else one per name of ``get``.
dtype : float32 or float64, keyword-only
    Result dtype; by default float32 when every input is float32, else float64.
progress : bool, keyword-only
    Show a progress bar.
block_rows : int, keyword-only
    Rows of x1 per tile of the fused pass; by default about 32 MiB of each result per tile.
    Results agree to rounding whatever its value (BLAS may block other tiles differently).

Returns
-------
Kernel, ndarray or namedtuple, dtype as above. The readout width O does not appear:
the kernel of an O-output network is Σ ⊗ I_O.

Raises
------
ValueError, TypeError
    Bad shapes, dtypes, NaN/inf, unknown ``get``.
MemoryError
    The results would not fit in available memory (checked before allocating).
"""


def _check_out(out, get, names, shape, dtype):
    if out is None:
        return {}
    if get is None:
        raise ValueError("out needs an explicit get ('nngp', 'ntk' or a tuple) to say which array is which")
    if isinstance(get, str):
        out = {get: out}
    elif isinstance(out, dict):
        if set(out) - set(names):
            raise ValueError(f"out has keys {sorted(out)} not all in get={names}")
    else:
        out = tuple(out)
        if len(out) != len(names):
            raise ValueError(f"out must hold one array per name in get={names}; got {len(out)}")
        out = dict(zip(names, out))
    for name, arr in out.items():
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
            got = f"{type(arr).__name__} of shape {getattr(arr, 'shape', None)} and dtype {getattr(arr, 'dtype', None)}"
            raise ValueError(f"out[{name!r}] must be an ndarray of shape {shape} and dtype {dtype}; got {got}")
        if not arr.flags.writeable or (shape[1] > 1 and arr.strides[1] != arr.itemsize) or arr.strides[0] < 0:
            raise ValueError(f"out[{name!r}] must be writeable with contiguous rows")
    return out


def _layer(items):
    network = _Network(items)
    kernel_fn = _KernelFn(network)

    def init_fn(rng, input_shape):
        """(output_shape, params) of the network for inputs of shape input_shape."""
        return network.init(rng, input_shape)

    def apply_fn(params, x, **kwargs):
        """Outputs of the finite network with parameters params on x of shape (N, d)."""
        return network.apply(params, x)

    init_fn.network = apply_fn.network = network  # read by fastntk.empirical
    return Layer(init_fn, apply_fn, kernel_fn)


def serial(*layers):
    """Layers applied one after the other."""
    items = []
    for i, layer in enumerate(layers):
        kernel_fn = layer[2] if isinstance(layer, tuple) and len(layer) == 3 else None
        if not isinstance(kernel_fn, _KernelFn):
            raise TypeError(f"serial argument {i} must be a fastntk.stax layer; got {type(layer).__name__}")
        items.extend(kernel_fn.network.items)
    return _layer(items)


def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
    """Fully-connected layer.

    'ntk' parameterization (Jacot et al. 2018, arXiv:1806.07572): z = W_std/√fan_in·h W + b_std·b
    with W, b ~ N(0, 1). 'standard' (Sohl-Dickstein et al. 2020, arXiv:2001.07301): z = h W + b with
    W ~ N(0, W_std²/fan_in), b ~ N(0, b_std²). ``b_std=None`` means no bias parameter at all,
    which differs from ``b_std=0.0`` in the standard-parameterization NTK (+1 per layer).
    """
    if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:
        raise ValueError(f"out_dim must be a positive integer; got {out_dim!r}")
    W_std = check_positive(W_std, "W_std")
    b_std = check_positive(b_std, "b_std", allow_zero=True, allow_none=True)
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {parameterization!r}")
    return _layer([_DenseSpec(int(out_dim), W_std, b_std, parameterization)])


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def ABRelu(a, b):
    """φ(x) = a·min(x, 0) + b·max(x, 0)."""
    return _layer([_act.abrelu(_finite(a, "a"), _finite(b, "b"))])


def Relu():
    return _layer([_act.relu()])


def LeakyRelu(alpha):
    return _layer([_act.leaky_relu(_finite(alpha, "alpha"))])


def Abs():
    return _layer([_act.abs_()])


def Erf(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·erf(b·x) + c."""
    return _layer([_act.erf(_finite(a, "a"), _finite(b, "b"), _finite(c, "c"))])


def Sigmoid_like():
    """0.5·erf(x/2.4020563531719796) + 0.5, neural-tangents' erf stand-in for the sigmoid."""
    return _layer([_act.sigmoid_like()])


def Gelu(approximate=False):
    """φ(x) = x·Φ(x); ``approximate=True``: the tanh approximation (kernels by quadrature)."""
    return _layer([_act.gelu(bool(approximate))])


def Sin(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·sin(b·x + c)."""
    return _layer([_act.sin(_finite(a, "a"), _finite(b, "b"), _finite(c, "c"))])


def Cos(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·cos(b·x + c)."""
    return _layer([_act.cos(_finite(a, "a"), _finite(b, "b"), _finite(c, "c"))])


def Activation(name):
    """The activation registered as ``name`` in ``fastntk.activations.ACTIVATIONS`` (default parameters)."""
    return _layer([_act.by_name(name)])


def fc_network(depth, activation="relu", W_std=1.0, b_std=None, parameterization="ntk", width=512, out_dim=1):
    """``depth`` × (Dense(width) + activation) then a Dense(out_dim) readout, one W_std/b_std throughout.

    ``activation`` is a name in ``fastntk.activations.ACTIVATIONS``. ``width`` enters the
    kernels only in the 'standard' parameterization (and the finite network).
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    layers = []
    for _ in range(depth):
        layers += [Dense(width, W_std, b_std, parameterization), Activation(activation)]
    return serial(*layers, Dense(out_dim, W_std, b_std, parameterization))


def Identity():
    """No-op layer."""
    return _layer([_act.identity()])


def Tanh(deg=25):
    """tanh; dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _layer([_act.tanh(deg)])


def Softplus(deg=25):
    """log(1 + eˣ); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _layer([_act.softplus(deg)])


def Silu(deg=25):
    """x·sigmoid(x) (SiLU, Swish); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _layer([_act.silu(deg)])


def ElementwiseNumerical(fn, deg, df=None):
    """Any activation φ = fn, dual kernels by deg×deg Gauss–Hermite quadrature.

    ``fn`` and ``df`` (φ') must be NumPy-vectorised and compilable by Numba; without ``df``
    φ' is a central difference of ``fn`` (relative error ~1e-10).
    """
    return _layer([_act.numerical(fn, deg, df)])


def Elementwise(fn, nngp_fn, d_nngp_fn=None):
    """Activation φ = fn with given dual kernels ``nngp_fn(cov12, var1, var2)`` = E[φ(u)φ(v)]
    and ``d_nngp_fn`` = E[φ'(u)φ'(v)] (by a central difference of nngp_fn when None)."""
    return _layer([_act.elementwise(fn, nngp_fn, d_nngp_fn)])


Swish = Silu
