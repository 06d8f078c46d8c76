"""Empirical NTK of PyTorch modules: the adapter behind ``empirical_ntk_fn(module)``.

* ``nn.Sequential`` stacks (nested ones are flattened) of ``nn.Linear`` and elementwise
  activations (ReLU, LeakyReLU, Tanh, GELU, Sigmoid, SiLU, Softplus, Identity) are converted to a
  fastntk network and run by the structured NumPy path. ``nn.Linear`` computes y = x Wᵀ + b and the
  NTK is taken with respect to the stored W and b, i.e. fastntk's 'standard' parameterization
  (c = β = 1) with weights Wᵀ of shape (in, out).
* Any other module goes through ``torch.func``: per-sample Jacobians ``vmap(jacrev(f))``
  (implementation 1), or NTK-vector products (vjp, then jvp; implementation 2), run by the block
  loop of :mod:`fastntk.empirical._autodiff` so that the memory stays O(block·O·P).

torch is imported only here, and only when a module is passed.
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np

from .. import activations as _act
from .._validation import check_block_rows, check_finite, check_pair
from . import _autodiff, _axes, _native, _net
from ._axes import NtkImplementation


def is_module(f):
    """True if ``f`` is a torch ``nn.Module`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(f, torch.nn.Module)


# --------------------------------------------------------------------------- activations
@functools.lru_cache(maxsize=None)
def _softplus(beta, threshold):
    """torch.nn.Softplus: log(1 + e^(βx))/β, and x where βx > threshold; φ' = σ(βx) (1 there)."""
    def fn(x):
        return np.where(beta * x > threshold, x, np.logaddexp(beta * x, 0.0) / beta)

    def df(x):
        return np.where(beta * x > threshold, 1.0, 0.5 * (1 + np.tanh(0.5 * beta * x)))

    return _act.numerical(fn, 25, df, name="softplus")


@functools.lru_cache(maxsize=None)
def _activation(kind, arg=None):
    if kind == "ReLU":
        return _act.relu()
    if kind == "LeakyReLU":
        return _act.leaky_relu(arg)
    if kind == "GELU":
        return _act.gelu(arg == "tanh")
    return {"Tanh": _act.tanh, "SiLU": _act.silu, "Sigmoid": _act.sigmoid}[kind]()


def _activation_of(layer):
    """fastntk Activation for a torch elementwise layer, None (Identity) or raise KeyError."""
    kind = type(layer).__name__
    if kind in ("Identity", "Dropout") and (kind == "Identity" or not layer.training):
        return None
    if kind == "LeakyReLU":
        return _activation(kind, float(layer.negative_slope))
    if kind == "GELU":
        return _activation(kind, layer.approximate)
    if kind == "Softplus":
        return _softplus(float(layer.beta), float(layer.threshold))
    if kind in ("ReLU", "Tanh", "Sigmoid", "SiLU"):
        return _activation(kind)
    raise KeyError(kind)


def _flat_layers(module):
    torch = sys.modules["torch"]
    for child in module:
        if isinstance(child, torch.nn.Sequential):
            yield from _flat_layers(child)
        else:
            yield child


def structured_network(module):
    """(Net, [(name_W, name_b or None) | ()]) for a supported nn.Sequential, else None."""
    torch = sys.modules["torch"]
    if not isinstance(module, torch.nn.Sequential):
        return None
    names = {id(p): n for n, p in module.named_parameters()}
    items, keys = [], []
    for layer in _flat_layers(module):
        if type(layer) is torch.nn.Linear:
            b = layer.bias
            items.append(_net.standard_dense(layer.out_features, b is not None))
            keys.append((names[id(layer.weight)], None if b is None else names[id(b)]))
            continue
        try:
            act = _activation_of(layer)
        except KeyError:
            return None
        if act is not None:
            items.append(act)
            keys.append(())
    net = _net.network(items)
    if not net.has_dense:
        return None
    return net, keys


# --------------------------------------------------------------------------- parameters and inputs
def module_params(module, params):
    """{name: tensor} of the module's parameters, taken from ``params`` when given; all finite floats."""
    own = dict(module.named_parameters())
    if params is None:
        params = own
    elif not isinstance(params, dict):
        raise TypeError(f"params must be None or a dict name -> tensor (as module.named_parameters()); "
                        f"got {type(params).__name__}")
    missing = sorted(set(own) - set(params))
    if missing:
        raise ValueError(f"params lacks the module's parameters {missing}")
    out = {}
    for k, v in own.items():
        p = params[k]
        if tuple(np.shape(p)) != tuple(v.shape):
            raise ValueError(f"params[{k!r}] must have shape {tuple(v.shape)}; got {tuple(np.shape(p))}")
        t = p.detach() if hasattr(p, "detach") else sys.modules["torch"].as_tensor(np.asarray(p))
        if not t.is_floating_point():
            raise TypeError(f"params[{k!r}] must be a floating-point tensor; got {t.dtype}")
        check_finite(t.cpu().numpy(), f"params[{k!r}]")
        out[k] = t
    return out


def to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


# --------------------------------------------------------------------------- torch.func paths
def _func_model(module, theta):
    from torch.func import functional_call

    def f_batch(th, x):
        out = functional_call(module, th, (x,))
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2:
            raise ValueError(f"the module's output must have shape (N, O) or (N,); got {tuple(out.shape)}")
        return out

    def f_single(th, x):
        return f_batch(th, x[None])[0]

    return f_single, f_batch


def _jacobian(f_single, theta, x):
    """Per-sample Jacobian (N, O, P) by vmap(jacrev), as in PyTorch's NTK tutorial."""
    import torch
    from torch.func import jacrev, vmap

    jac = vmap(jacrev(f_single), (None, 0))(theta, x)
    return torch.cat([j.flatten(2) for j in jac.values()], dim=2)


def _ntvp_block(f_batch, theta, x1, x2):
    """Θ̂(x1, x2) (N1, N2, O, O) from NTK-vector products: vjp on x2, then jvp on x1."""
    import torch
    from torch.func import jvp, vjp, vmap

    out2, vjp_fn = vjp(lambda th: f_batch(th, x2), theta)
    n2, n_out = out2.shape
    basis = torch.eye(n2 * n_out, dtype=out2.dtype).reshape(n2 * n_out, n2, n_out)
    tangents = vmap(vjp_fn)(basis)[0]  # J(x2)ᵀ e_jb for every (j, b)

    def push(t):
        return jvp(lambda th: f_batch(th, x1), (theta,), (t,))[1]  # J(x1)·t, (N1, O)

    with warnings.catch_warnings():  # torch's first forward-AD call scripts decompositions (torch ≥ 2.10 warns)
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
        k = vmap(push)(tangents)  # (N2·O, N1, O)
    return k.reshape(n2, n_out, x1.shape[0], n_out).permute(2, 0, 3, 1)


class _Shim:
    """The torch.func pieces of the autodiff loop (:mod:`fastntk.empirical._autodiff`)."""

    def __init__(self, module, theta, x1, x2):
        import torch

        self.f_single, self.f_batch = _func_model(module, theta)
        self.theta = theta
        self.x1 = torch.as_tensor(x1)
        self.x2 = None if x2 is None else torch.as_tensor(x2)
        self.n_params = sum(v.numel() for v in theta.values())
        with torch.no_grad():
            try:
                self.n_out = self.f_batch(theta, self.x1[:1]).shape[1]
            except RuntimeError as err:  # e.g. a feature mismatch inside the module
                raise ValueError(f"the module cannot be applied to x1 of shape {tuple(x1.shape)}: {err}") from err

    def jacobian(self, x):
        return _jacobian(self.f_single, self.theta, x).detach().numpy()

    def ntvp(self, xa, xb):
        return _ntvp_block(self.f_batch, self.theta, xa, xb).detach().numpy()


def ntk_fn(module, trace, diag, implementation):
    """``ntk_fn(x1, x2=None, params=None, block_rows=None)`` of a torch nn.Module (canonical axes)."""
    net = structured_network(module) if implementation in (0, 3) else None
    mode = _axes.mode(trace, diag)

    def ntk_fn(x1, x2=None, params=None, block_rows=None):
        block_rows = check_block_rows(block_rows)
        theta = module_params(module, params)
        x1n, x2n, dtype = check_pair(to_numpy(x1), None if x2 is None else to_numpy(x2))
        if net is not None:  # nn.Linear: y = x Wᵀ + b, 'standard' parameterization with W stored transposed
            snet, keys = net
            p = [() if not k else (np.ascontiguousarray(to_numpy(theta[k[0]]).T, dtype),
                                   None if k[1] is None else to_numpy(theta[k[1]]).astype(dtype)[None])
                 for k in keys]
            if p[0][0].shape[0] != x1n.shape[1]:
                raise ValueError(f"x1 must have {p[0][0].shape[0]} features (the module's first nn.Linear); "
                                 f"got x1.shape={x1n.shape}")
            p = snet.check_params(p, x1n.shape[1])
            out = _native.ntk(snet, p, x1n, x2n, trace, diag, NtkImplementation.STRUCTURED_DERIVATIVES,
                              block_rows=block_rows)
        else:
            import torch

            theta = {k: v.to(getattr(torch, dtype.name)) for k, v in theta.items()}
            _axes.check_batch_axes(trace, diag, x1n.shape[0], x1n.shape[0] if x2n is None else x2n.shape[0])
            shim = _Shim(module, theta, x1n, x2n)
            out = _autodiff.ntk(shim, mode or "full", implementation == NtkImplementation.NTK_VECTOR_PRODUCTS,
                                block_rows, dtype)
            out = _axes.finish(out, trace, diag, shim.n_out)
        if hasattr(x1, "detach"):  # tensors in, tensor out
            import torch

            return torch.from_numpy(np.ascontiguousarray(out))
        return out

    ntk_fn.__doc__ = "Empirical NTK of a torch module at x1 (N1, d), x2 (N2, d) or None, params dict or None."
    return ntk_fn
