"""NTKSketch: features of a positively homogeneous NNGP or NTK from a polynomial of the cosine.

For a fully-connected network of Dense layers without biases and activations of the ReLU
family (relu, leaky_relu, abs, abrelu: φ(x) = a·min(x, 0) + b·max(x, 0)) both kernels are
positively homogeneous of degree 1 in each argument: the input Σ⁰ = x·y/d is; a Dense layer
maps (Σ, Θ) linearly (Σ ← W_std²Σ, and Θ ← Σ_new + W_std²Θ, or n_in·Σ + W_std²Θ in the
'standard' parameterization); an activation maps Σ to √(Σ₁₁Σ₂₂)·J₁(ρ) and Θ to Θ·J₀(ρ), the
arc-cosine kernels of the correlation ρ, which no rescaling changes (Cho & Saul 2009). So

    K(x, y) = ‖x‖‖y‖·κ(cos∠(x, y)),   κ(t) = K(e₁, t·e₁ + √(1 − t²)·e₂)  (unit vectors in d dims),

exactly ``kernel_fn(x, y, get)``; κ depends on d (every term carries the input's 1/d, and the
'standard' NTK also the first layer's n_in = d/s_in). A bias breaks the form (Σ gains b_std², and
in the 'standard' parameterization Θ gains the constant 1 of a bias parameter even at b_std = 0).

κ is evaluated with the network's own ``kernel_fn`` on the Chebyshev–Lobatto nodes of [−1, 1]
(denser near ±1, where the arc-cosine kernels have their √(1 − t) and (1 − t)^{3/2} kinks) and
fitted by least squares with non-negative coefficients, P(t) = Σ_k c_k t^k (Lawson–Hanson NNLS),
once per (network, d, get, degree). Non-negative c_k make P a sum of the positive definite kernels
(x̂·ŷ)^k, each with features S_k(x̂^{⊗k}):

    Φ(x) = ‖x‖·[√c₀, √c₁·S₁(x̂), √c₂·S₂(x̂^{⊗2}), …, √c_q·S_q(x̂^{⊗q})],   x̂ = x/‖x‖,

so E[Φ(x)·Φ(y)] = ‖x‖‖y‖·P(cos∠(x, y)) and the bias of the map is the fit's error. S_k is a
PolySketch (Ahle et al. 2020, §4): a binary tree over 2^⌈log₂k⌉ leaves, k of them x̂ and the rest
e₁ (whose tensor products are 1, so a node with an e₁ subtree passes its other child up exactly),
every other node a TensorSRHT with signs and indices of its own, E_S[S(a⊗b)·S(a'⊗b')] =
(a·a')(b·b'); the degree-1 term is x̂ itself when its share of the features is at least d (an
SRHT of x̂ otherwise). Zandieh et al. 2021 ("Scaling Neural Tangent Kernels via Sketching and
Random Features", NeurIPS) call the whole map NTKSketch.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.optimize

from . import _core, _tiles, activations, spec
from ._kernel_fn import KernelFn
from ._validation import check_map_input

__all__ = ["DEFAULT_DEGREE", "MAX_DEGREE", "PolySketchMap", "next_pow2", "polysketch_features",
           "tensor_srht_parameters"]

#: The default degree q of the polynomial of the cosine (its fit errors: the docstring of
#: :func:`fastntk.features.random_features`; the NTK's √(1 − t) kink makes higher degrees gain little).
DEFAULT_DEGREE = 8

#: The largest degree (a PolySketch tree of 64 leaves, 6 levels).
MAX_DEGREE = 64

#: Chebyshev–Lobatto nodes cos(πj/n), j = 0 … n, on which κ is evaluated and fitted.
_NODES = np.cos(np.pi * np.arange(1025) / 1024)


class PolySketchMap:
    """A drawn NTKSketch map of one network's NNGP or NTK (see the module docstring).

    Build it with :func:`fastntk.features.random_features` (``method='sketch'``). ``transform(x)``
    gives Φ(x), shape (N, n_out), with Φ(x1)·Φ(x2)ᵀ ≈ ``kernel_fn(x1, x2, get)``. The map is fixed
    once drawn: the same points always get the same features (to rounding, as FeatureMap's).

    Attributes
    ----------
    get : 'nngp' or 'ntk'
    d : int, the input features. n_out : int, the output features (<= the n_features asked for).
    dtype : np.float32 or np.float64, of the features (every product is computed in it).
    degree : int, the degree q of the polynomial.
    coefficients : ndarray of shape (q + 1,), float64 (read-only)
        c₀ … c_q >= 0 of P(t) = Σ_k c_k t^k ≈ κ(t).
    poly_error : float
        max |P(t) − κ(t)| / max |κ| over the fit's nodes of [−1, 1]: the map's bias, relative to
        the largest kernel of two unit vectors.
    """

    def __init__(self, coefficients, poly_error, trees, d, get, dtype):
        self.coefficients, self.poly_error, self._trees = coefficients, poly_error, trees
        self.d, self.get, self.dtype, self.degree = d, get, dtype, len(coefficients) - 1
        self.n_out = int(coefficients[0] > 0) + sum(_width(root, d) for _, root in trees)
        self._widest = max([d] + [node.m for _, root in trees for node in _inner_nodes(root)])

    def transform(self, x, out=None):
        """Φ(x): (N, n_out) of ``dtype`` for x (N, d), computed block by block of rows; zero rows
        give zero features (the kernel of a zero input is 0). ``out``: as
        :meth:`fastntk.features.FeatureMap.transform`'s (an np.memmap for results larger than RAM)."""
        x = check_map_input(x, self.d, self.dtype)

        def fill(x_block, block):
            norm = np.linalg.norm(x_block, axis=1, keepdims=True)
            x_hat = x_block / np.where(norm > 0, norm, 1)
            col = 0
            if self.coefficients[0] > 0:
                block[:, 0], col = math.sqrt(self.coefficients[0]), 1
            for k, root in self._trees:
                view = block[:, col:col + _width(root, self.d)]
                _sketch(root, x_hat, view)
                view *= self.dtype(math.sqrt(self.coefficients[k]))
                col += view.shape[1]
            block *= norm

        # the output block, and about three tree nodes' outputs at once (a node's two children, itself)
        row_bytes = (self.n_out + 3 * self._widest) * np.dtype(self.dtype).itemsize
        return _tiles.fill_rows(x, self.n_out, self.dtype, row_bytes, fill, out)


class _TensorSRHT:
    """A PolySketch node: S(a ⊗ b) of its children's outputs a (p) and b (p'), to m coordinates."""

    def __init__(self, left, right, m, d, rng, dtype):
        self.left, self.right, self.m = left, right, m
        sides = [next_pow2(_width(child, d)) for child in (left, right)]
        self.signs, self.index = tensor_srht_parameters(sides, m, rng, dtype)


def next_pow2(n):
    """The least power of 2 >= n (1 for n <= 1): a TensorSRHT side's padded width, a PolySketch's leaves."""
    return 1 << max(0, (int(n) - 1).bit_length())


def tensor_srht_parameters(sides, m, rng, dtype):
    """The random signs and indices of one TensorSRHT (sides: its two padded widths): of
    ``_core.tensor_srht`` here and of the random features' Fourier sketch (``features._FourierSketch``).

    signs: ±1 of ``dtype`` per side. index: m int64 coordinates per side, each one uniform (so
    E_S[S(a⊗b)·S(a'⊗b')] = (a·a')(b·b') holds exactly), drawn as consecutive random permutations of
    the side (a fresh one for each m/side), so every coordinate is used ⌊m/side⌋ or ⌈m/side⌉ times:
    stratified, with less variance than independent draws (measured with the Walsh–Hadamard sketch:
    the depth-1 ReLU NTK's random features at m = 2048, 0.145 -> 0.130 relative Frobenius error).
    """
    signs = [rng.choice(np.array([-1.0, 1.0], dtype), size=s) for s in sides]
    index = [np.concatenate([rng.permutation(s) for _ in range(-(-m // s))])[:m].astype(np.int64) for s in sides]
    return signs, index


# The leaves of a PolySketch tree: x̂ (width d) and e₁ (width 1; every tensor power of it is 1).
_X, _E1 = "x", "e1"


def _width(node, d):
    return d if node is _X else 1 if node is _E1 else node.m


def _inner_nodes(node):
    if isinstance(node, _TensorSRHT):
        yield node
        yield from _inner_nodes(node.left)
        yield from _inner_nodes(node.right)


def _sketch(node, x_hat, out=None):
    """The output of ``node`` for the rows x̂ (n, d), into ``out`` (n, width) when given (the root):
    one ``_core.tensor_srht`` call per inner node."""
    if node is _X:
        if out is None:
            return x_hat
        out[:] = x_hat
        return out
    a, b = (np.ones((x_hat.shape[0], 1), x_hat.dtype) if child is _E1 else _sketch(child, x_hat)
            for child in (node.left, node.right))
    if out is None:
        out = np.empty((x_hat.shape[0], node.m), x_hat.dtype)
    _core.tensor_srht(a, b, *node.signs, *node.index, out)
    return out


def _polysketch(k, m, d, rng, dtype):
    """The root of a PolySketch S_k of x̂^{⊗k} to m coordinates (x̂ itself for k = 1 when m = d)."""
    level = [_X] * k + [_E1] * (next_pow2(k) - k)  # the e₁ leaves at the end
    while len(level) > 1:
        level = [a if b is _E1 else _TensorSRHT(a, b, m, d, rng, dtype) for a, b in zip(level[::2], level[1::2])]
    root = level[0]
    return _TensorSRHT(_X, _E1, m, d, rng, dtype) if root is _X and m < d else root


def check_homogeneous(layer_spec, get):
    """ValueError unless the network's ``get`` kernel is ‖x‖‖y‖·κ(cos∠(x, y)) (module docstring):
    Dense layers without a bias and activations of the ReLU family only."""
    alternative = "; use method='random_features', which covers every fully-connected network"
    has_dense = False
    for leaf in spec.leaves(layer_spec):
        if isinstance(leaf, spec.Dense):
            has_dense = True
            if leaf.b_std or (get == "ntk" and leaf.parameterization == "standard" and leaf.b_std is not None):
                raise ValueError(
                    f"method='sketch' needs a kernel of the form ‖x‖‖y‖·κ(cos∠(x, y)), which a Dense layer with a "
                    f"bias breaks (b_std={leaf.b_std!r}"
                    + (", and a bias parameter adds 1 to the 'standard' NTK even at b_std=0" if not leaf.b_std else "")
                    + f"){alternative}")
        elif isinstance(leaf, spec.Act):
            dual = leaf.activation.dual
            if dual is not None and not isinstance(dual, activations.ABReluDual):
                raise ValueError(f"method='sketch' needs a kernel of the form ‖x‖‖y‖·κ(cos∠(x, y)), which only the "
                                 f"ReLU family (relu, leaky_relu, abs, abrelu) keeps; this network has the activation "
                                 f"{leaf.activation.name!r}{alternative}")
        elif not isinstance(leaf, spec.Identity):
            raise ValueError(f"method='sketch' covers fully-connected networks (Dense and activation layers); this "
                             f"network has a {type(leaf).__name__} layer")
    if get == "ntk" and not has_dense:
        raise ValueError("this network's NTK is 0 (it has no Dense layer): it has no features")


def polysketch_features(layer_spec, d, get, n_features, degree, rng, dtype):
    """Draw the NTKSketch map (module docstring) of the network ``layer_spec`` for inputs of d features:
    the checks of the public boundary (:func:`fastntk.features.random_features`) done, ``rng`` a Generator."""
    check_homogeneous(layer_spec, get)
    coefficients, poly_error = fit_cosine_polynomial(layer_spec, d, get, degree)
    trees = [(k, _polysketch(k, m, d, rng, dtype)) for k, m in _split(coefficients, d, n_features)]
    return PolySketchMap(coefficients, poly_error, trees, d, get, dtype)


@functools.lru_cache(maxsize=64)
def fit_cosine_polynomial(layer_spec, d, get, degree):
    """The non-negative least-squares fit P(t) = Σ_k c_k t^k of κ(t) = K(e₁, t·e₁ + √(1 − t²)·e₂), the
    network's ``get`` kernel of two unit vectors in d dims with cosine t, on the Chebyshev–Lobatto nodes
    of [−1, 1] (t = ±1 only for d = 1, where no other cosine exists).

    Returns (c, error): c of shape (degree + 1,), float64 (read-only), and the fit's max |P − κ| over
    the nodes relative to max |κ| (= κ(1) for a positive semi-definite kernel). Cached: specs are
    frozen, hashable dataclasses."""
    t = _NODES if d > 1 else np.array([1.0, -1.0])
    x2 = np.zeros((t.size, d))
    x2[:, 0] = t
    if d > 1:
        x2[:, 1] = np.sqrt(np.maximum(0.0, 1.0 - t * t))
    kappa = KernelFn(layer_spec)(np.eye(1, d), x2, get)[0]
    powers = t[:, None] ** np.arange(degree + 1)
    c = scipy.optimize.nnls(powers, kappa)[0]
    c.flags.writeable = False
    return c, float(np.max(np.abs(powers @ c - kappa)) / np.max(np.abs(kappa)))


def _split(coefficients, d, n_features):
    """[(k, m_k)]: the output features of each degree k >= 1 with c_k > 0, at most n_features in all
    with one for c₀ > 0. m_k ∝ c_k (at least 1; what the floors leave is unused), which minimises
    Σ_k c_k²·v/m_k, the variance of the sum when each PolySketch's is about v/m_k (it grows only
    with the tree's ⌈log₂k⌉ levels; on 500 points of the sphere in d = 64, ReLU NTK of depth 1 and 3,
    m_k ∝ c_k·√k, c_k·k and √c_k gave 2–20% larger errors). The degree 1 takes x̂ exactly (m₁ = d)
    when its share is at least d and leaves a feature per other degree; the others share the rest."""
    budget = n_features - int(coefficients[0] > 0)
    degrees = [k for k in range(1, len(coefficients)) if coefficients[k] > 0]

    def shares(total, ks):
        total_c = sum(coefficients[k] for k in ks)
        return {k: max(1, math.floor(total * coefficients[k] / total_c)) for k in ks}

    m = shares(budget, degrees)
    if m.get(1, 0) >= d and budget - d >= len(degrees) - 1:
        m = {1: d} | shares(budget - d, degrees[1:])
    if sum(m.values()) > budget:
        raise ValueError(f"n_features={n_features} is too small for this sketch: its {len(degrees)} degrees with "
                         f"c_k > 0{' and c₀' if budget < n_features else ''} need at least "
                         f"{len(degrees) + n_features - budget} features")
    return sorted(m.items())
