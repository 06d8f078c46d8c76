"""Random feature maps of the infinite-width NNGP and NTK: Φ(x)·Φ(y) ≈ K(x, y).

An exact kernel costs O(N²) memory and an exact solve O(N³); features Φ (N, m) turn kernel
ridge regression into linear ridge regression in O(N·m²). The map follows the network's own
recursion (the conventions of :mod:`fastntk.infinite`), layer by layer, on two feature
matrices per point, f_Σ with f_Σ(x)·f_Σ(y) ≈ Σ(x, y) and f_Θ with f_Θ(x)·f_Θ(y) ≈ Θ(x, y):

* input:            f_Σ = x/√d, f_Θ = () (Θ = 0);
* Dense, 'ntk':     f_Σ ← [W_std f_Σ, b_std],  f_Θ ← [f_Σ (new), W_std f_Θ];
* Dense, 'standard' (fan in n_in, c = 1 with a bias): f_Θ ← [√n_in f_Σ (old), W_std f_Θ, √c],
  f_Σ ← [W_std f_Σ, b_std];
* activation φ:     with G (p, m₁) whose columns are N(0, I_p) (so each column u_j of u = f_Σ G is
  jointly Gaussian with covariance f_Σ(x)·f_Σ(y) across points), f_Σ ← φ(u)/√m₁, g = φ'(u)/√m₁,
  and f_Θ ← S(f_Θ ⊗ g), S a degree-2 TensorSRHT to m₂ coordinates (E_S[S(a⊗b)·S(a'⊗b')] =
  (a·a')(b·b')).

The columns of G are orthogonal within each block of p (orthogonal random features, Yu et al.
2016, "Orthogonal Random Features", NeurIPS; their variance is lower than independent columns'):
for p <= ``ORTHOGONAL_QR_MAX`` each block is Q·diag(χ_p) with Q Haar-distributed (a QR of a Gaussian
matrix) and χ_p independent chi lengths, so every column is exactly N(0, I_p); wider inputs (the
m₁ features of a deeper layer) get the structured map √P·H D₁ H D₂ H D₃·diag(χ_P)/P^(3/2) of
``SORF_ROUNDS`` random-sign and Walsh–Hadamard rounds on the input padded to P = 2^k (SORF, the
same paper), O(m₁ log P) per point instead of O(m₁ p), whose columns are N(0, I) to O(P^(−1/2)).
S uses the discrete Fourier transform (real and imaginary parts of m₂/2 products of sampled
Fourier coefficients, as Zandieh et al.'s NTKRF; ``_FourierSketch``): on the ReLU's 0/1
derivative features it had less variance than the Walsh–Hadamard TensorSRHT in a one-off
comparison (bias-free ReLU NTK, depth 3, d = 64, m = 8192, N = 1000, 3 seeds: relative Frobenius
error 0.085 -> 0.074); ``benchmarks/compare_features.py`` compares the whole map with the NTKRF.

So E[f_Σ(x)·f_Σ(y)] = E[φ(u)φ(v)] and E[f_Θ(x)·f_Θ(y)] = Θ(x, y)·E[φ'(u)φ'(v)] given the
previous layer's features: one hidden layer is unbiased for the exact kernel (the arc-cosine
features of Cho & Saul 2009 for the ReLU family); deeper maps are unbiased layer by layer given
the features below, and their error (a bias and a spread, both from the random Σ̂ entering the
next activation) falls as m grows (Zandieh et al. 2021, "Scaling Neural Tangent Kernels via
Sketching and Random Features", NeurIPS). φ and φ' are the registry's own
(:mod:`fastntk.activations`), so every activation with a pointwise φ has features: closed form
or quadrature alike.

The kernel targeted is exactly ``kernel_fn(x1, x2, get)`` of the same ``stax`` network.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from . import _core, _tiles, spec
from ._backend import get_num_threads
from ._polysketch import (
    DEFAULT_DEGREE,
    MAX_DEGREE,
    next_pow2,
    polysketch_features,
    tensor_srht_parameters,
)
from ._validation import check_dtype, check_integer, check_map_input, check_seed

__all__ = ["FeatureMap", "random_features"]

#: Methods of :func:`random_features`: the layer-by-layer features of this module, and NTKSketch
#: (:mod:`fastntk._polysketch`: a polynomial of the cosine, each monomial sketched by a PolySketch).
METHODS = ("random_features", "sketch")

#: Inputs of at most this width get exactly orthogonal Gaussian projections (a QR per block of p
#: columns: O(m₁·p²) to draw); wider ones the structured SORF map (module docstring). 256: at
#: p = m₁ = 1024 (depth 3, m = 2048, N = 4000) the two QRs were half the build time (0.34 of
#: 0.65 s) and SORF's relative Frobenius error was the QR's within 0.003 (0.137 vs 0.135, 3 seeds).
ORTHOGONAL_QR_MAX = 256
#: Random-sign and Walsh–Hadamard rounds of the SORF map (Yu et al. 2016 use 3).
SORF_ROUNDS = 3


class FeatureMap:
    """A drawn random feature map of one network's NNGP or NTK (see the module docstring).

    Build it with :func:`random_features`. ``transform(x)`` gives Φ(x), shape (N, n_out),
    with Φ(x1)·Φ(x2)ᵀ ≈ ``kernel_fn(x1, x2, get)``. The map is fixed once drawn: the same
    points always get the same features (to rounding: BLAS may round a point's projections
    differently in another batch or block of rows).

    Attributes
    ----------
    get : 'nngp' or 'ntk'
    d : int, the input features. n_out : int, the output features (<= the n_features asked for).
    dtype : np.float32 or np.float64, of the features (every product is computed in it).
    """

    def __init__(self, steps, widths, d, get, n_out, dtype):
        self._steps, self.d, self.get, self.n_out, self.dtype = steps, d, get, n_out, dtype
        self._widest = max(w for pair in widths for w in pair)  # of a block's matrices (m₁ among them)

    def transform(self, x, out=None):
        """Φ(x): (N, n_out) of ``dtype`` for x (N, d), computed block by block of rows.

        ``out``: None, or a writeable (N, n_out) array of ``dtype`` with contiguous rows to write Φ
        into and return (checked before any work): an np.memmap takes feature matrices larger than
        RAM, its disk reserved first and its pages written to the file as each block completes.
        """
        x = check_map_input(x, self.d, self.dtype)
        scale = self.dtype(1.0 / math.sqrt(self.d))

        # the readout (a last Dense) writes its columns straight into the result
        readout = self._steps[-1] if self._steps and isinstance(self._steps[-1], _Dense) else None
        steps = self._steps[:-1] if readout else self._steps

        def fill(x_block, out_block):
            f_sigma, f_theta = x_block * scale, None
            for st in steps:
                f_sigma, f_theta = st.apply(f_sigma, f_theta)
            if readout:
                readout.apply(f_sigma, f_theta, out=out_block, get=self.get)
            else:
                out_block[...] = f_sigma if self.get == "nngp" else f_theta

        # about eight matrices of the widest per row at once (f_Θ, u, φ(u), φ'(u), the two sides'
        # spectra, their product, the sketch)
        return _tiles.fill_rows(x, self.n_out, self.dtype, 8 * self._widest * np.dtype(self.dtype).itemsize, fill, out)


class _Dense:
    """A Dense layer on the two feature matrices (module docstring); no randomness."""

    def __init__(self, layer, fan_in, with_ntk):
        self.w = float(layer.W_std)
        self.b = float(layer.b_std) if layer.b_std else None  # a zero column adds nothing to Σ
        self.standard = layer.parameterization == "standard"
        self.n_in = layer.n_in(fan_in)
        self.bias_unit = self.standard and layer.b_std is not None  # Θ's c = 1: a trainable bias (even b_std = 0)
        self.with_ntk = with_ntk

    def widths(self, p_sigma, p_theta):
        """(p_Σ, p_Θ) after the layer for (p_Σ, p_Θ) before it."""
        new_sigma = p_sigma + (self.b is not None)
        if not self.with_ntk:
            return new_sigma, 0
        return new_sigma, (p_sigma if self.standard else new_sigma) + p_theta + self.bias_unit

    def apply(self, f_sigma, f_theta, out=None, get=None):
        """(f_Σ, f_Θ) after the layer; with ``out`` (the readout) only the one ``get`` names ('nngp'
        or 'ntk'), written into ``out`` (n, its width), the other None."""
        n, dtype = f_sigma.shape[0], f_sigma.dtype
        t = dtype.type
        sigma_parts = [(t(self.w), f_sigma)] + ([(None, t(self.b))] if self.b is not None else [])
        if not self.with_ntk or get == "nngp":
            return _columns(sigma_parts, n, dtype, out), None
        theta_parts = [(t(math.sqrt(self.n_in)), f_sigma)] if self.standard else list(sigma_parts)
        if f_theta is not None and f_theta.shape[1]:
            theta_parts.append((t(self.w), f_theta))
        if self.bias_unit:
            theta_parts.append((None, t(1.0)))
        if out is not None:
            return None, _columns(theta_parts, n, dtype, out)
        return _columns(sigma_parts, n, dtype), _columns(theta_parts, n, dtype)


def _columns(parts, n, dtype, out=None):
    """The columns of ``parts`` side by side, each (scale, block (n, p)) for scale·block or (None, c)
    for one column of the constant c, written into ``out`` (n, total) or a new array: one pass per
    part, no temporaries."""
    widths = [1 if scale is None else block.shape[1] for scale, block in parts]
    out = np.empty((n, sum(widths)), dtype) if out is None else out
    start = 0
    for (scale, block), width in zip(parts, widths):
        if scale is None:
            out[:, start] = block
        else:
            np.multiply(block, scale, out=out[:, start:start + width])
        start += width
    return out


class _Act:
    """An activation on the two feature matrices: φ(f_Σ G)/√m₁, and S(f_Θ ⊗ φ'(f_Σ G)/√m₁)."""

    def __init__(self, activation, m1, m2, with_ntk):
        try:
            activation.fn(np.zeros(1))
            activation.df(np.zeros(1))
        except NotImplementedError:
            raise ValueError(f"activation {activation.name!r} is a kernel without a pointwise function φ, which "
                             f"random features need; use kernel_fn for its exact kernel") from None
        self.phi, self.dphi, self.m1, self.m2, self.with_ntk = activation.fn, activation.df, m1, m2, with_ntk

    def widths(self, p_sigma, p_theta):
        return self.m1, (self.m2 if self.with_ntk and p_theta > 0 else 0)

    def draw(self, p_sigma, p_theta, rng, dtype):
        """The layer's random parameters for inputs of widths (p_Σ, p_Θ): G, and the sketch's."""
        self.project = _Projection(p_sigma, self.m1, rng, dtype)
        self.sketch = _FourierSketch(p_theta, self.m1, self.m2, rng, dtype) if self.with_ntk and p_theta > 0 else None

    def apply(self, f_sigma, f_theta):
        u = self.project(f_sigma)
        scale = u.dtype.type(1.0 / math.sqrt(self.m1))
        new_sigma = _scaled(self.phi(u), u, scale)
        if self.sketch is None:
            return new_sigma, None
        return new_sigma, self.sketch(f_theta, _scaled(self.dphi(u), u, scale))


def _scaled(values, u, scale):
    """scale·values as an array of u's dtype, in place when ``values`` is a new array of its own."""
    values = np.asarray(values, u.dtype)
    if values is u or values.base is not None:  # u itself or a view (of u, say): leave it be
        return values * scale
    return np.multiply(values, scale, out=values)


class _Projection:
    """u = f G, G (p, m) with N(0, I_p) columns orthogonal within blocks of p (module docstring)."""

    def __init__(self, p, m, rng, dtype):
        self.p, self.m = p, m
        if p <= ORTHOGONAL_QR_MAX:
            blocks = []
            for start in range(0, m, p):
                q, r = np.linalg.qr(rng.standard_normal((p, p)))
                q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # Haar: the QR's signs made unique
                blocks.append((q * np.sqrt(rng.chisquare(p, p)))[:, : min(p, m - start)])
            self.g = np.hstack(blocks).astype(dtype)
        else:
            P = next_pow2(p)
            n_blocks = -(-m // P)
            self.g = None
            self.signs = rng.choice(np.array([-1.0, 1.0], dtype), size=(n_blocks, SORF_ROUNDS, P))
            # χ_P lengths with each round's 1/√P (H/√P is orthogonal) folded in
            self.lengths = (np.sqrt(rng.chisquare(P, (n_blocks, P))) / math.sqrt(P) ** SORF_ROUNDS).astype(dtype)

    def __call__(self, f):
        if self.g is not None:
            return f @ self.g
        n, (n_blocks, _, P) = f.shape[0], self.signs.shape
        u, z = np.empty((n, n_blocks * P), f.dtype), np.empty((n, P), f.dtype)
        for b in range(n_blocks):
            z[:, : self.p], z[:, self.p:] = f, 0
            for signs in self.signs[b]:
                z *= signs
                _core.fwht(z)
            np.multiply(z, self.lengths[b], out=u[:, b * P:(b + 1) * P])
        return u[:, : self.m]


class _FourierSketch:
    """A degree-2 TensorSRHT with the discrete Fourier transform: S(a ⊗ b) (n, m) for a (n, p), b (n, q).

    With â = F_P(s_a ∘ ã), b̂ = F_Q(s_b ∘ b̃) (ã, b̃ zero-padded to P, Q; s random signs; F the DFT),
    z_j = â[i_j]·b̂[k_j]·√(2/m) for ⌊m/2⌋ uniform index pairs, S = [Re z, Im z] and, for odd m, one
    real product â[0]·b̂[0]/√m: S(a⊗b)·S(a'⊗b') = Σ_j Re(z_j z̄'_j) (+ the real term), each term
    with expectation over the signs (a·a')(b·b') for any indices, weighted by its share of the m
    coordinates. The real inputs' spectra are Hermitian: â[i] = conj â[P − i] from the rfft.
    """

    def __init__(self, p, q, m, rng, dtype):
        self.sides = (scipy.fft.next_fast_len(p, real=True), scipy.fft.next_fast_len(q, real=True))
        self.signs, index = tensor_srht_parameters(self.sides, m // 2, rng, dtype)
        self.real = m % 2  # an odd m's last coordinate: the zero frequencies' (real) product
        # Each index into the half spectrum, and -1 where the full spectrum's entry is its conjugate
        self.half = [np.minimum(i, side - i) for i, side in zip(index, self.sides)]
        self.imag_sign = [np.where(i > side // 2, -1.0, 1.0).astype(dtype) for i, side in zip(index, self.sides)]
        self.m, self.scale = m, dtype(math.sqrt(2.0 / m))

    def __call__(self, a, b):
        workers = get_num_threads()
        ha, hb = (scipy.fft.rfft(v * signs[: v.shape[1]], n=side, axis=1, workers=workers)
                  for v, signs, side in zip((a, b), self.signs, self.sides))
        out = np.empty((a.shape[0], self.m), a.dtype)
        _core.fourier_products(ha, hb, *self.half, *self.imag_sign, self.real, self.scale,
                               self.scale * math.sqrt(0.5), out)
        return out


def _steps(layer_spec, d, m1, m2, with_ntk):
    """The network's Dense and activation steps in order, and the widths (p_Σ, p_Θ) entering each
    and leaving the last; ValueError for any layer random features do not cover."""
    steps, widths, fan_in = [], [(d, 0)], d
    for leaf in spec.leaves(layer_spec):
        if isinstance(leaf, spec.Dense):
            steps.append(_Dense(leaf, fan_in, with_ntk))
            fan_in = leaf.width
        elif isinstance(leaf, spec.Act):
            if leaf.activation.dual is None:  # the identity is no layer
                continue
            steps.append(_Act(leaf.activation, m1, m2, with_ntk))
        elif not isinstance(leaf, spec.Identity):
            raise ValueError(f"random features cover fully-connected networks (Dense and activation layers); "
                             f"this network has a {type(leaf).__name__} layer")
        else:
            continue
        widths.append(steps[-1].widths(*widths[-1]))
    return steps, widths


def random_features(kernel_fn, d, get="ntk", n_features=4096, *, method="random_features", seed=None,
                    dtype=np.float64, degree=None):
    """Draw a random feature map Φ of the NNGP or NTK of a fully-connected ``stax`` network.

    Parameters
    ----------
    kernel_fn : the network's ``kernel_fn`` (from ``stax.serial(...)``), or its spec
    d : int >= 1, the input features
    get : 'nngp' or 'ntk'
    n_features : int >= 2, the most output features. For the NNGP each activation draws
        m₁ = n_features − (the readout's bias) Gaussian projections; for the NTK m₁ = n_features/2,
        and the tensor sketches keep m₂ = n_features − (the rest of the output) coordinates.
    method : 'random_features' or 'sketch'
        'sketch' is NTKSketch (:mod:`fastntk._polysketch`): for Dense layers without biases and
        activations of the ReLU family only, whose kernels are ‖x‖‖y‖·κ(cos∠(x, y)); κ is fitted by
        a polynomial of ``degree`` with non-negative coefficients (its error: the map's
        ``poly_error``) and each monomial sketched by a PolySketch. Other networks: ValueError.
    seed : int, numpy.random.Generator or None (fresh entropy)
    dtype : np.float32 or np.float64, of the parameters, the products and the features
    degree : int in [1, 64] or None, only with method='sketch'
        The degree q of the polynomial of the cosine; None: 8 (max error relative to κ(1), bias-free
        ReLU networks in d = 64: about 3e-4 (NNGP) and 1.5e-2 (NTK) at depth 1, 1e-3 and 4.6e-2 at
        depth 3; the NTK's √(1 − t) kink near t = 1 makes higher degrees gain little).

    Returns
    -------
    FeatureMap, whose ``transform(x)`` (x: (N, d)) gives Φ(x) (N, n_out), n_out <= n_features,
    with E[Φ(x)·Φ(y)] = ``kernel_fn(x, y, get)`` exactly for one hidden layer and up to O(1/m)
    for deeper ones (module docstring); the error of one draw falls like n_features^(−1/2).
    A network without activations has an exact, linear feature map of its own width.
    method='sketch': a PolySketchMap (the same interface, plus ``degree``, ``coefficients`` and
    ``poly_error``), E[Φ(x)·Φ(y)] = ‖x‖‖y‖·P(cos∠(x, y)), P the fitted polynomial.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if get not in ("nngp", "ntk"):
        raise ValueError(f"get must be 'nngp' or 'ntk'; got {get!r}")
    d = check_integer(d, "d")
    n_features = check_integer(n_features, "n_features", minimum=2)
    dtype = np.dtype(check_dtype(dtype)).type
    rng = check_seed(seed)
    layer_spec = getattr(kernel_fn, "spec", kernel_fn)
    if method == "sketch":
        degree = DEFAULT_DEGREE if degree is None else check_integer(degree, "degree", maximum=MAX_DEGREE)
        return polysketch_features(layer_spec, d, get, n_features, degree, rng, dtype)
    if degree is not None:
        raise ValueError(f"degree is the polynomial degree of method='sketch'; method={method!r} takes none "
                         f"(got degree={degree!r})")
    with_ntk = get == "ntk"
    pick = 1 if with_ntk else 0  # the output is f_Θ or f_Σ
    # n_out is affine in m₁ and m₂: fix m₁, then give the sketches what is left.
    m1 = n_features // 2 if with_ntk else 1
    base = _steps(layer_spec, d, m1, 0, with_ntk)[1][-1][pick]
    if with_ntk:
        m2 = n_features - base
    else:
        m1, m2 = n_features - (base - 1), 0
    steps, widths = _steps(layer_spec, d, m1, max(m2, 1), with_ntk)
    n_out = widths[-1][pick]
    if n_out == 0:
        raise ValueError("this network's NTK is 0 (it has no Dense layer): it has no features")
    if m1 < 1 or (with_ntk and m2 < 1) or n_out > n_features:
        raise ValueError(f"n_features={n_features} is too small for this network, whose feature map needs more "
                         f"than {n_features} features (without activations its kernels are linear: "
                         f"{n_out} exact features)")
    for st, (p_sigma, p_theta) in zip(steps, widths):
        if isinstance(st, _Act):
            st.draw(p_sigma, p_theta, rng, dtype)
    return FeatureMap(steps, widths, d, get, n_out, dtype)
