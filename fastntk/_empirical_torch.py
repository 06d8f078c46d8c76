"""Empirical NTK of PyTorch modules: the adapter behind ``empirical_ntk_fn(module)``.

* ``nn.Sequential`` stacks (nested ones are flattened) of ``nn.Linear`` and elementwise
  activations (ReLU, LeakyReLU, Tanh, GELU, Sigmoid, SiLU, Softplus, Identity) are converted to a
  fastntk network and run by the structured NumPy path. ``nn.Linear`` computes y = x Wᵀ + b and the
  NTK is taken with respect to the stored W and b, i.e. fastntk's 'standard' parameterization
  (c = β = 1) with weights Wᵀ of shape (in, out).
* Any other module goes through ``torch.func``: per-sample Jacobians ``vmap(jacrev(f))`` contracted
  by einsum (implementation 1), or NTK-vector products (vjp, then jvp; implementation 2), over
  blocks of rows so that the memory stays O(block·O·P).

torch is imported only here, and only when a module is passed.
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np

from . import activations as _act
from .spec import Act
from .spec import Dense as _DenseSpec

_JAC_BYTES = 512 * 2**20  # per-block Jacobian budget of the torch.func paths (bytes)


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
    """(items, [(name_W, name_b or None) | ()]) for a supported nn.Sequential, else None."""
    torch = sys.modules["torch"]
    if not isinstance(module, torch.nn.Sequential):
        return None
    names = {id(p): n for n, p in module.named_parameters()}
    items, keys = [], []
    for layer in _flat_layers(module):
        if type(layer) is torch.nn.Linear:
            b = layer.bias
            items.append(_DenseSpec(layer.out_features, 1.0, None if b is None else 0.0, "standard"))
            keys.append((names[id(layer.weight)], None if b is None else names[id(b)]))
            continue
        try:
            act = _activation_of(layer)
        except KeyError:
            return None
        if act is not None:
            items.append(Act(act))
            keys.append(())
    if not any(isinstance(it, _DenseSpec) for it in items):
        return None
    return items, keys


# --------------------------------------------------------------------------- parameters and inputs
def module_params(module, params):
    """{name: tensor} of the module's parameters, taken from ``params`` when given."""
    own = dict(module.named_parameters())
    if params is None:
        return {k: v.detach() for k, v in own.items()}
    if not isinstance(params, dict):
        raise TypeError(f"params must be None or a dict name -> tensor (as module.named_parameters()); "
                        f"got {type(params).__name__}")
    missing = sorted(set(own) - set(params))
    if missing:
        raise ValueError(f"params lacks the module's parameters {missing}")
    out = {}
    for k, v in own.items():
        p = params[k]
        if tuple(p.shape) != tuple(v.shape):
            raise ValueError(f"params[{k!r}] must have shape {tuple(v.shape)}; got {tuple(p.shape)}")
        out[k] = p.detach() if hasattr(p, "detach") else sys.modules["torch"].as_tensor(p)
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


def func_ntk(module, theta, x1, x2, mode, ntvp, block_rows):
    """Θ̂ of a generic module: 'trace' (N1, N2) summed over outputs, 'diag' (N1, N2, O) or 'full'."""
    import torch

    f_single, f_batch = _func_model(module, theta)
    t1 = torch.as_tensor(x1)
    t2 = t1 if x2 is None else torch.as_tensor(x2)
    with torch.no_grad():
        n_out = f_batch(theta, t1[:1]).shape[1]
    n_p = sum(v.numel() for v in theta.values())
    B = block_rows or max(1, min(t1.shape[0], _JAC_BYTES // max(1, n_out * n_p * t1.element_size())))
    eq = {"trace": "iap,jap->ij", "diag": "iap,jap->ija", "full": "iap,jbp->ijab"}[mode]
    blocks = []
    for r0 in range(0, t1.shape[0], B):
        xi = t1[r0:r0 + B]
        if ntvp:
            k = torch.cat([_ntvp_block(f_batch, theta, xi, t2[c0:c0 + B]) for c0 in range(0, t2.shape[0], B)], 1)
            blocks.append(torch.einsum({"trace": "ijaa->ij", "diag": "ijaa->ija", "full": "ijab->ijab"}[mode], k))
        else:
            Ji = _jacobian(f_single, theta, xi)
            cols = [Ji if x2 is None and c0 == r0 else _jacobian(f_single, theta, t2[c0:c0 + B])
                    for c0 in range(0, t2.shape[0], B)]
            blocks.append(torch.cat([torch.einsum(eq, Ji, Jj) for Jj in cols], 1))
    return torch.cat(blocks, 0).detach().numpy(), n_out
