"""neural-tangents-compatible network combinators (fully-connected part, with branches).

Every layer and ``serial`` return ``(init_fn, apply_fn, kernel_fn)``, as
``neural_tangents.stax`` does, with the same conventions and numbers::

    from fastntk import stax
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, ('nngp', 'ntk'))   # k.nngp, k.ntk: (N1, N2)

Branches as in neural-tangents: ``serial(FanOut(2), parallel(serial(Relu(), Dense(512)),
Identity()), FanInSum())`` is a residual block (FanInSum, FanInProd, FanInConcat merge);
``repeat(layer, n)`` applies a layer n times; Flatten and Dropout complete the set.

Parameters are NumPy arrays: a Dense layer holds ``(W, b)`` with W of shape
(fan_in, out_dim) and b of shape (1, out_dim) (``b = None`` when ``b_std=None``), a Conv
layer W of shape (*filter_shape, C_in, out_chan) and b (1, ..., 1, out_chan);
an activation, pooling or LayerNorm layer holds ``()``. ``init_fn(jax.random.PRNGKey(k), shape)`` instead draws the JAX
arrays neural-tangents 0.6.5 draws from that key, and ``apply_fn`` computes in the namespace
of its inputs: JAX or PyTorch arrays in, the same kind out, differentiable by
``jax.grad``/``jax.jit``/``jax.vmap`` or torch autograd.

``kernel_fn`` takes JAX arrays too and returns JAX arrays, inside ``jax.jit`` and ``jax.vmap``
(a ``jax.pure_callback`` around the compiled path) and under ``jax.grad`` with respect to the
inputs or to ``W_std``/``b_std`` given as JAX values. The design choice: values come from the
compiled path whenever the hyperparameters are numbers (under jit, vmap and grad alike), and
derivatives from the plain reference recursion (``fastntk._reference``) evaluated in
``jax.numpy`` (a ``jax.custom_jvp``): exact, slower, and compiled once per network structure.
When ``W_std`` or ``b_std`` is a tracer (``jax.grad`` over it), values and derivatives both come
from that recursion. See ``fastntk._jax_dispatch``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from . import _jax_dispatch, network, spec
from . import activations as _act
from ._kernel_fn import KernelFn, as_array, permute
from ._types import Kernel
from ._validation import check_positive

__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "AvgPool",
    "Conv",
    "Cos",
    "Dense",
    "Dropout",
    "Elementwise",
    "ElementwiseNumerical",
    "Erf",
    "FanInConcat",
    "FanInProd",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSumPool",
    "Identity",
    "Kernel",
    "LayerNorm",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Silu",
    "Sin",
    "Softplus",
    "SumPool",
    "Swish",
    "Tanh",
    "fc_network",
    "parallel",
    "repeat",
    "serial",
]


class Layer(NamedTuple):
    """``(init_fn, apply_fn, kernel_fn)`` of a network; each carries its typed spec as ``.spec``."""

    init_fn: object
    apply_fn: object
    kernel_fn: object


def _layer(layer_spec):
    """The (init_fn, apply_fn, kernel_fn) of a spec node; each function carries it as ``.spec``."""
    kernel_fn = KernelFn(layer_spec)

    def init_fn(rng, input_shape):
        """(output_shape, params) of the network for inputs of shape input_shape.

        ``rng``: an int seed or numpy Generator (NumPy params), or a JAX PRNG key
        (neural-tangents' JAX params, drawn exactly as ``neural_tangents.stax`` 0.6.5 does).
        """
        shape = _input_shape(input_shape)
        order = spec.layout(layer_spec, len(shape))
        out_shape, params = network.init(layer_spec, rng, tuple(shape[a] for a in order))
        if order == tuple(range(len(shape))):
            return out_shape, params
        back = tuple(np.argsort(order))  # canonical (batch first, features last) -> the layers' layout
        b_shape = [1] * len(shape)

        def to_layout(W, b):  # b: features on channel_axis, as neural-tangents' Dense draws it
            if b is None:
                return W, b
            b_shape[order[-1]] = b.shape[-1]
            return W, b.reshape((*b.shape[:b.ndim - len(shape)], *b_shape))

        return tuple(out_shape[a] for a in back), network.map_dense(layer_spec, params, to_layout)

    def apply_fn(params, inputs, *, rng=None, **kwargs):
        """Outputs of the finite network with parameters ``params`` on ``inputs`` of shape (..., d).

        ``rng``: the random key of Dropout layers in mode 'train' (a ``jax.random.PRNGKey``, split
        and drawn from as neural-tangents does, or an int seed / numpy Generator); unused by
        every other layer. Any other keyword is refused.
        """
        if kwargs:
            raise TypeError(f"apply_fn got unexpected keyword arguments {sorted(kwargs)}; accepted: rng "
                            "(the key of Dropout layers in mode 'train')")
        return _apply(layer_spec, params, inputs, rng)

    init_fn.spec = apply_fn.spec = layer_spec  # read by fastntk.empirical
    return Layer(init_fn, apply_fn, kernel_fn)


def _input_shape(input_shape):
    """input_shape as a tuple of ints (at least 1-D: the last axis is the features, a positive int);
    -1 on the other axes means any size, as in neural-tangents' ``init_fn(key, (-1, d))``."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in shape)
            or any(n < 1 and n != -1 for n in shape) or shape[-1] < 1):
        raise ValueError(f"input_shape must be a tuple of ints such as (N, d) or (-1, d), d positive; got "
                         f"{input_shape!r}")
    return tuple(int(n) for n in shape)


def _is_real(h, xp):
    """Real floating or integer dtype. NumPy and JAX dtypes are NumPy dtypes (and jax.numpy before
    0.4.32 has no ``isdtype``); others (PyTorch) are asked through their namespace."""
    try:
        return np.dtype(h.dtype).kind in "fiu"
    except TypeError:
        return xp.isdtype(h.dtype, ("real floating", "integral"))


def _apply(layer_spec, params, x, rng=None):
    h, xp = as_array(x)
    if h.ndim < 1 or not _is_real(h, xp):
        raise ValueError(f"inputs must be a real array of shape (..., d); got shape {h.shape}, dtype {h.dtype}")
    order = spec.layout(layer_spec, max(h.ndim, 1))
    canonical = order == tuple(range(h.ndim))
    if not canonical:  # compute with the batch first and the features last, b likewise
        h = permute(h, xp, order)
        params = network.map_dense(layer_spec, params, lambda W, b: (W, None if b is None else xp.reshape(
            b, (*b.shape[:b.ndim - h.ndim], *[1] * (h.ndim - 1), b.shape[b.ndim - h.ndim + order[-1]]))))
    net = network.check_params(layer_spec, params, h.shape[-1])
    random = any(isinstance(leaf, spec.Dropout) and leaf.mode == "train" for leaf, _ in net)
    out = network.apply(net, h, network.leaf_keys(layer_spec, rng) if random else None)
    return out if canonical else permute(out, xp, tuple(int(a) for a in np.argsort(order)))


def serial(*layers):
    """Layers applied one after the other; params are a list with one entry per layer."""
    return _layer(spec.Serial(_specs(layers, "serial")))


def _specs(layers, caller):
    """The specs of ``layers`` (fastntk.stax layers), TypeError naming the argument otherwise."""
    for i, layer in enumerate(layers):
        kernel_fn = layer[2] if isinstance(layer, tuple) and len(layer) == 3 else None
        if not isinstance(kernel_fn, KernelFn):
            raise TypeError(f"{caller} argument {i} must be a fastntk.stax layer; got {type(layer).__name__}")
    return tuple(layer[2].spec for layer in layers)


def parallel(*layers):
    """Layer k applied to branch k (after FanOut(len(layers))); params are a tuple, one entry per layer.

    Each layer maps one branch to one; the kernels of the branches are independent until a FanIn
    layer merges them.
    """
    if not layers:
        raise ValueError("parallel needs at least one layer")
    return _layer(_checked(spec.Parallel(_specs(layers, "parallel"))))


def repeat(layer, n):
    """``layer`` applied n times, each time with parameters of its own (= serial(*[layer] * n)).

    ``layer`` must keep the shape of its input. Params are those of ``layer`` with each array
    stacked on a new leading axis of length n, as neural-tangents' (``lax.scan``) are.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    return _layer(_checked(spec.Repeat(_specs([layer], "repeat")[0], int(n))))


def _checked(node):
    """node, once its branches fit (spec.arity raises a ValueError otherwise)."""
    spec.arity(node, len(node.layers) if isinstance(node, spec.Parallel) else 1)
    return node


def FanOut(num):
    """``num`` copies of the input, one per branch (for parallel)."""
    if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
        raise ValueError(f"num must be a positive integer; got {num!r}")
    return _layer(spec.FanOut(int(num)))


def FanInSum():
    """The sum of the branches. Kernels: Σ = Σᵢ Σᵢ, Θ = Σᵢ Θᵢ (the branches must be Gaussian:
    each must end in a Dense layer or pass a Gaussian input through)."""
    return _layer(spec.FanInSum())


def FanInProd():
    """The elementwise product of the branches. Kernels: Σ = Πᵢ Σᵢ, Θ = Σᵢ Θᵢ Πⱼ≠ᵢ Σⱼ."""
    return _layer(spec.FanInProd())


def FanInConcat(axis=-1):
    """The concatenation of the branches along ``axis``. Kernels (axis -1, the features): the
    width-weighted mean Σ = Σᵢ nᵢΣᵢ / Σᵢ nᵢ (the plain mean for equal widths nᵢ), same for Θ;
    the result is not Gaussian, so a Dense layer must follow before an activation."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"axis must be an integer; got {axis!r}")
    return _layer(spec.FanInConcat(int(axis)))


def Flatten(batch_axis=0, batch_axis_out=0):
    """All non-batch axes into one: (N, ...) -> (N, prod(...)); a no-op on (N, d) inputs. Kernels of
    (N, *S, C) inputs: the mean over positions p of Σ(x_p, x'_p) (a Dense readout has one weight per
    position and channel), so only same-position covariances are computed before it (without pooling)."""
    _default_axes(Flatten=(batch_axis, 0), batch_axis_out=(batch_axis_out, 0))
    return _layer(spec.Flatten())


def _default_axes(**given):
    """NotImplementedError unless every axis argument (name=(value, default)) has its default."""
    for name, (value, default) in given.items():
        if value != default:
            raise NotImplementedError(f"{name}={value!r}: fastntk's spatial layers take inputs with the batch first "
                                      f"and the channels last (neural-tangents' NHWC); keep the default {default}")


def _ints(value, name, n=None, minimum=1):
    """A tuple of ints ≥ minimum (an int counts as one); of length n when n is given."""
    values = (value,) if isinstance(value, numbers.Integral) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if (not values or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in values)
            or (n is not None and len(values) != n)):
        size = f"{n} " if n is not None else ""
        raise ValueError(f"{name} must be a tuple of {size}ints >= {minimum}; got {value!r}")
    return tuple(int(v) for v in values)


def _padding(padding):
    name = str(getattr(padding, "name", padding)).upper()  # neural-tangents' Padding enum too
    if name not in spec.PADDINGS:
        raise ValueError(f"padding must be one of {spec.PADDINGS}; got {padding!r}")
    return name


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None, dimension_numbers=None,
         parameterization="ntk", s=(1, 1)):
    """Convolution over the spatial axes of (N, *S, C) inputs (NHWC; 1-D sequences (N, L, C) with a
    1-tuple ``filter_shape``), neural-tangents' signature. ``strides`` None: 1 along every axis.
    W of shape (*filter_shape, C_in, out_chan) and b (1, ..., 1, out_chan) (neural-tangents'; b
    (out_chan,) is accepted too); fan in C_in·prod(filter_shape).
    Kernels: each output position averages the input covariances over the filter taps, one tap
    shifting both positions (a shared weight), then the Dense rule with that fan in."""
    if dimension_numbers is not None and tuple(dimension_numbers) != ("NHWC", "HWIO", "NHWC"):
        raise NotImplementedError(f"dimension_numbers={dimension_numbers!r}: fastntk's Conv takes NHWC inputs and "
                                  "HWIO filters; keep dimension_numbers=None")
    if tuple(s) != (1, 1):
        raise NotImplementedError(f"s={s!r}: Conv takes neural-tangents' default s=(1, 1)")
    filter_shape = _ints(filter_shape, "filter_shape")
    strides = (1,) * len(filter_shape) if strides is None else _ints(strides, "strides", len(filter_shape))
    dense = _dense(out_chan, W_std, b_std, parameterization, out_dim_name="out_chan")
    return _layer(spec.Conv(dense.out_dim, filter_shape, strides, _padding(padding), dense.W_std, dense.b_std,
                            dense.parameterization))


def _pool(kind, window_shape, strides, padding, normalize_edges, batch_axis, channel_axis):
    _default_axes(batch_axis=(batch_axis, 0), channel_axis=(channel_axis, -1))
    window_shape = _ints(window_shape, "window_shape")
    strides = (1,) * len(window_shape) if strides is None else _ints(strides, "strides", len(window_shape))
    _check_bool(normalize_edges, "normalize_edges")
    return _layer(spec.Pool(kind, window_shape, strides, _padding(padding), bool(normalize_edges)))


def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False, batch_axis=0, channel_axis=-1):
    """Mean over each window of the spatial axes (``strides`` None: 1, not the window). With
    ``normalize_edges`` False (neural-tangents' default) a SAME window is divided by its full size
    also where it overlaps the padding; True divides by the number of its positions in the input."""
    return _pool("avg", window_shape, strides, padding, normalize_edges, batch_axis, channel_axis)


def SumPool(window_shape, strides=None, padding="VALID", batch_axis=0, channel_axis=-1):
    """Sum over each window of the spatial axes (``strides`` None: 1)."""
    return _pool("sum", window_shape, strides, padding, False, batch_axis, channel_axis)


def GlobalAvgPool(batch_axis=0, channel_axis=-1):
    """Mean over all spatial positions: (N, *S, C) -> (N, C). Kernels: the mean of Σ(x_p, x'_q) over
    all pairs of positions."""
    _default_axes(batch_axis=(batch_axis, 0), channel_axis=(channel_axis, -1))
    return _layer(spec.GlobalPool("avg"))


def GlobalSumPool(batch_axis=0, channel_axis=-1):
    """Sum over all spatial positions: (N, *S, C) -> (N, C)."""
    _default_axes(batch_axis=(batch_axis, 0), channel_axis=(channel_axis, -1))
    return _layer(spec.GlobalPool("sum"))


def LayerNorm(axis=-1, eps=1e-12, batch_axis=0, channel_axis=-1):
    """(h − mean)/√(var + eps) over ``axis`` (an int or a tuple; the channel axis among them). Kernels:
    Σ(x_p, x'_q)/√(V(x_p)·V(x'_q)), the same for Θ, with V the variance Σ(x_p, x_p) + eps (axis -1)
    or its mean over the normalised positions."""
    _default_axes(batch_axis=(batch_axis, 0), channel_axis=(channel_axis, -1))
    axes = _ints(axis, "axis", minimum=-(2**31))
    eps = _finite(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0; got {eps!r}")
    return _layer(spec.LayerNorm(axes, eps))


def Dropout(rate, mode="train"):
    """Inverted dropout with keep rate ``rate`` in (0, 1] (neural-tangents': rate=1 keeps everything).

    'train': apply_fn keeps each entry with probability ``rate`` and divides it by ``rate`` (the
    mask drawn from apply_fn's ``rng``); the kernels scale Σ(x, x) and Θ(x, x) by 1/rate (only
    the per-point variances when x1 and x2 differ) and are no longer Gaussian. 'test': identity.
    """
    if mode not in ("test", "train"):
        raise ValueError(f"mode must be 'train' or 'test'; got {mode!r}")
    rate = _finite(rate, "rate")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate (the keep rate) must be in (0, 1]; got {rate!r}")
    return _layer(spec.Dropout(rate, mode))


def _act_layer(activation):
    return _layer(spec.Identity() if activation.dual is None else spec.Act(activation))


def Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1, parameterization="ntk", s=(1, 1)):
    """Fully-connected layer, neural-tangents' signature (arguments in its order).

    'ntk' parameterization (Jacot et al. 2018, arXiv:1806.07572): z = W_std/√fan_in·h W + b_std·b
    with W, b ~ N(0, 1). 'standard' (Sohl-Dickstein et al. 2020, arXiv:2001.07301): z = h W/√s_in + b
    with W ~ N(0, W_std²·s_in/fan_in) of shape (fan_in, s_out·out_dim), b ~ N(0, b_std²); its NTK
    has n_in = fan_in/s_in. ``s=(s_in, s_out)`` (standard only) are the width scalings of that
    paper: s_in must be the previous layer's s_out (1 at the inputs). ``b_std=None`` means no
    bias parameter at all, which differs from ``b_std=0.0`` in the standard-parameterization NTK
    (+1 per layer). ``batch_axis``, ``channel_axis``: the batch and feature axes of the inputs,
    outputs and b, as in neural-tangents (see ``spec.layout``; fastntk computes with the batch
    first and the features last and moves the axes there and back).
    """
    return _layer(_dense(out_dim, W_std, b_std, parameterization, s=s, batch_axis=batch_axis,
                         channel_axis=channel_axis))


def _dense(out_dim, W_std, b_std, parameterization, out_dim_name="out_dim", s=(1, 1), batch_axis=0, channel_axis=-1):
    if isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral) or out_dim < 1:
        raise ValueError(f"{out_dim_name} must be a positive integer; got {out_dim!r}")
    W_std = _std(W_std, "W_std")  # 0: neural-tangents allows it (phase diagrams)
    b_std = None if b_std is None else _std(b_std, "b_std")
    for value, name in ((batch_axis, "batch_axis"), (channel_axis, "channel_axis")):
        if isinstance(value, str) and value in ("ntk", "standard"):
            raise TypeError(f"{name}={value!r}: Dense takes neural-tangents' argument order (out_dim, W_std, b_std, "
                            "batch_axis, channel_axis, parameterization, s); pass parameterization= by keyword")
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int; got {value!r}")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {parameterization!r}")
    try:
        s = tuple(s)
    except TypeError:
        s = ()
    if len(s) != 2 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in s):
        raise ValueError(f"s must be a pair of positive ints (s_in, s_out); got {s!r}")
    return spec.Dense(int(out_dim), W_std, b_std, parameterization, (int(s[0]), int(s[1])), int(batch_axis),
                      int(channel_axis))


def _std(value, name):
    """W_std or b_std: a finite real >= 0 as a float, or a JAX tracer (``jax.grad`` over it), kept as is."""
    value = _jax_dispatch.hyperparameter(value, name)
    return value if _jax_dispatch.is_tracer(value) else check_positive(value, name, allow_zero=True)


def _finite(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def ABRelu(a, b, do_stabilize=False):
    """φ(x) = a·min(x, 0) + b·max(x, 0).

    ``do_stabilize`` is accepted as neural-tangents' is and changes nothing: fastntk's dual
    kernels work on variances rescaled by exact powers of two, so they are exact at any depth.
    """
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.abrelu(_finite(a, "a"), _finite(b, "b")))


def Relu(do_stabilize=False):
    """max(x, 0); ``do_stabilize`` as in :func:`ABRelu` (accepted, not needed)."""
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.relu())


def LeakyRelu(alpha, do_stabilize=False):
    """max(x, 0) + alpha·min(x, 0); ``do_stabilize`` as in :func:`ABRelu` (accepted, not needed)."""
    _check_bool(do_stabilize, "do_stabilize")
    return _act_layer(_act.leaky_relu(_finite(alpha, "alpha")))


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")


def Abs():
    return _act_layer(_act.abs_())


def Erf(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·erf(b·x) + c."""
    return _act_layer(_act.erf(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Sigmoid_like():
    """0.5·erf(x/2.4020563531719796) + 0.5, neural-tangents' erf stand-in for the sigmoid."""
    return _act_layer(_act.sigmoid_like())


def Gelu(approximate=False):
    """φ(x) = x·Φ(x); ``approximate=True``: the tanh approximation (kernels by quadrature).

    With ``approximate=True`` the kernels are those of the tanh form the network computes,
    0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), by Gauss–Hermite quadrature, so kernel and
    network agree. neural-tangents differs here: its kernel is the exact GELU's while its
    network uses the tanh form (kernels ~1e-4 apart for unit-variance inputs); fastntk warns once.
    """
    if approximate:
        _warn_once("Gelu", "fastntk's stax.Gelu(approximate=True) kernel is that of the tanh-form network it builds; "
                   "neural-tangents returns the exact-GELU kernel for that network (~1e-4 apart)")
    return _act_layer(_act.gelu(bool(approximate)))


def Sin(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·sin(b·x + c)."""
    return _act_layer(_act.sin(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Cos(a=1.0, b=1.0, c=0.0):
    """φ(x) = a·cos(b·x + c)."""
    return _act_layer(_act.cos(_finite(a, "a"), _finite(b, "b"), _finite(c, "c")))


def Activation(name):
    """The activation registered as ``name`` in ``fastntk.activations.ACTIVATIONS`` (default parameters)."""
    return _act_layer(_act.by_name(name))


def fc_network(depth, activation="relu", W_std=1.0, b_std=None, parameterization="ntk", width=512, out_dim=1):
    """``depth`` × (Dense(width) + activation) then a Dense(out_dim) readout, one W_std/b_std throughout.

    ``activation`` is a name in ``fastntk.activations.ACTIVATIONS``. ``width`` enters the
    kernels only in the 'standard' parameterization (and the finite network).
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    hidden = _layer(_dense(width, W_std, b_std, parameterization, "width"))
    act = _act_layer(_act.by_name(activation))
    return serial(*[hidden, act] * depth, _layer(_dense(out_dim, W_std, b_std, parameterization)))


def Identity():
    """No-op layer."""
    return _act_layer(_act.identity())


def Tanh(deg=25):
    """tanh; dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.tanh(deg))


def Softplus(deg=25):
    """log(1 + eˣ); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.softplus(deg))


def Silu(deg=25):
    """x·sigmoid(x) (SiLU, Swish); dual kernels by deg×deg Gauss–Hermite quadrature (accuracy: ``activations.numerical``)."""
    return _act_layer(_act.silu(deg))


def ElementwiseNumerical(fn, deg, df=None):
    """Any activation φ = fn, dual kernels by deg×deg Gauss–Hermite quadrature.

    ``fn`` and ``df`` (φ') must be NumPy-vectorised and compilable by Numba; without ``df``
    φ' is a central difference of ``fn`` (relative error ~1e-10).
    """
    return _act_layer(_act.numerical(fn, deg, df))


def Elementwise(fn=None, nngp_fn=None, d_nngp_fn=None):
    """Activation φ = fn with given dual kernels ``nngp_fn(cov12, var1, var2)`` = E[φ(u)φ(v)]
    and ``d_nngp_fn`` = E[φ'(u)φ'(v)] (from nngp_fn when None: see ``activations.elementwise``).
    ``fn=None``: kernels only; ``nngp_fn=None``: finite network only, as in neural-tangents."""
    return _act_layer(_act.elementwise(fn, nngp_fn, d_nngp_fn))


Swish = Silu


# --- neural-tangents 0.6.5's other elementwise activations (stax/elementwise.py) ------------
# Same signatures and defaults; where neural-tangents' kernel is not that of its own network
# (Hermite at variances other than 1), fastntk's is the network's, with a one-time warning.

__all__ += ["Exp", "ExpNormalized", "Gabor", "Gaussian", "Hermite", "Monomial", "Polynomial",
            "RectifiedMonomial", "Rbf", "Sign"]

_WARNED = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        import warnings

        warnings.warn(message, UserWarning, stacklevel=3)


def Exp(a=1, b=1):
    """φ(x) = a·exp(b·x)."""
    return _act_layer(_act.exp(_finite(a, "a"), _finite(b, "b")))


def ExpNormalized(gamma=1, shift=-1, do_clip=False):
    """The "Gaussian normalised kernel" (Shankar et al. 2020, arXiv:2003.02237), a kernel only:
    Σ' = s·exp(γ(ρ + shift)), Θ' = γ·exp(γ(ρ + shift))·Θ, s = √(Σ₁₁Σ₂₂), ρ = Σ₁₂/s (clipped to
    [−1, 1] with ``do_clip``). ``apply_fn`` raises NotImplementedError, as neural-tangents'.
    """
    return _act_layer(_act.exp_normalized(_finite(gamma, "gamma"), _finite(shift, "shift"), bool(do_clip)))


def Gaussian(a=1, b=-1):
    """φ(x) = a·exp(b·x²). For b > 0, E[φ(u)φ(v)] is infinite where I − 2bΣ is not positive
    definite (a variance ≥ 1/(2b)): the dual kernels are +inf there, and kernel_fn raises
    OverflowError (neural-tangents returns a finite number from its product formula when
    both variances exceed 1/(2b))."""
    return _act_layer(_act.gaussian(_finite(a, "a"), _finite(b, "b")))


def Rbf(gamma=1.0):
    """φ(x) = √2·sin(√(2γ)·x + π/4): Σ' = exp(−γ(Σ₁₁ + Σ₂₂ − 2Σ₁₂)), the RBF kernel of the
    layer's inputs (γ = 1/(2ℓ²))."""
    return _act_layer(_act.rbf(check_positive(gamma, "gamma", allow_zero=True)))


def Sign():
    """φ(x) = sign(x): Σ' = 1 − 2θ/π; Θ' = 0 (sign' = 0 wherever it is defined, so the layers
    below a Sign do not move its output)."""
    return _act_layer(_act.sign())


def Gabor():
    """φ(x) = exp(−x²)·sin(x)."""
    return _act_layer(_act.gabor())


def Monomial(degree):
    """φ(x) = xⁿ, n = ``degree``: any integer 0 ≤ n ≤ 170 (neural-tangents: 0 to 5)."""
    return _act_layer(_act.monomial(degree))


def RectifiedMonomial(degree):
    """φ(x) = [x ≥ 0]·xⁿ: the arc-cosine kernel of degree n (Cho & Saul 2009), 0 ≤ n ≤ 64."""
    return _act_layer(_act.rectified_monomial(degree))


def Polynomial(coef):
    """φ(x) = coef[0] + coef[1]·x + … + coef[n]·xⁿ (closed form; see ``activations.polynomial``)."""
    return _act_layer(_act.polynomial(coef))


def Hermite(degree):
    """φ(x) = Heₙ(x)/√(n!), the probabilists' Hermite polynomial normalised to unit norm under N(0, 1).

    The kernel is that of this network for any variance the layer receives:
    Σ' = Σ_j n!/((n − 2j)!·j!²·4ʲ)·Σ₁₂ⁿ⁻²ʲ·((Σ₁₁ − 1)(Σ₂₂ − 1))ʲ. neural-tangents returns Σ₁₂ⁿ
    (and Θ' = n·Σ₁₂ⁿ⁻¹), which is this where Σ₁₁ = Σ₂₂ = 1 and not elsewhere; fastntk warns
    once about the difference.
    """
    layer = _act_layer(_act.hermite(degree))
    _warn_once("Hermite", "fastntk's stax.Hermite kernel is that of the network for any pre-activation "
               "variance; neural-tangents' (Σ12**degree) assumes unit variances and differs elsewhere")
    return layer
