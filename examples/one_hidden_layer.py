"""One hidden ReLU layer: the NTK's arc-cosine closed form = the layer recursion = a wide network's NTK.

Claim (seed 002, "NTK for network with 1 hidden layer of width n"; seed 001 §1.4–1.5, with biases;
Cho & Saul 2009 for the arc-cosine kernels): for f(x) = (W_std/√m) Σ_r a_r relu(u_r(x)),
u_r(x) = (W_std/√d) w_r·x + b_std·β_r, with a_r, w_r, β_r i.i.d. N(0, 1) (the NTK parameterization),
the NTK at infinite width is

    Θ(x, x') = Σ₂(x, x') + W_std² · κ₀(c)/2 · Σ₁(x, x'),
    Σ₂(x, x') = W_std² · √(q q') · κ₁(c)/2 + b_std²,

with Σ₁(x, x') = W_std² x·x'/d + b_std², q = Σ₁(x, x), q' = Σ₁(x', x'), c = Σ₁(x, x')/√(q q'),
θ = arccos c, κ₀(c) = (π − θ)/π and κ₁(c) = (sin θ + (π − θ) cos θ)/π: the arc-cosine kernels of
degree 0 and 1. The first term is the output layer's gradient, the second the hidden layer's
(weights and biases: the "x·x' + 1" of seed 001 §1.5).

Asserted, on 64 inputs x on the unit circle against x' = (1, 0):
1. fastntk's layer recursion (``stax`` kernel_fn, get='ntk' and 'nngp') equals the closed form to
   1e-12 relative: both are exact formulas evaluated in float64, so only rounding separates them.
2. The empirical NTK of a network of width m = 2¹⁴ (``empirical_ntk_fn``) is within 5/√m of Θ,
   measured as max |Θ̂ − Θ| / max Θ. It is a mean of m i.i.d. terms (seed 001 §1.3: fluctuations
   O(1/√m)) whose relative standard deviation is below 1 on this curve, so 5/√m leaves a 5σ margin
   for the largest of the 64 entries; and the error at m = 2¹⁴ is below the error at m = 2⁸.

Run: python examples/one_hidden_layer.py --out DIR   (--full: widths up to 2¹⁶)
"""

import numpy as np
from _common import Checks, parse_args, plt, save

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn

W_STD, B_STD = 1.5, 0.5


def arccos_kernels(c):
    """κ₀(c) and κ₁(c): the arc-cosine kernels of degree 0 and 1 (Cho & Saul 2009), c in [−1, 1]."""
    theta = np.arccos(np.clip(c, -1.0, 1.0))
    return (np.pi - theta) / np.pi, (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / np.pi


def closed_form(x1, x2):
    """Σ₂ and Θ of one hidden ReLU layer: x1 (N1, d), x2 (N2, d) → two (N1, N2) arrays."""
    d = x1.shape[1]
    sigma1 = W_STD**2 * x1 @ x2.T / d + B_STD**2
    q1 = W_STD**2 * np.sum(x1**2, 1) / d + B_STD**2
    q2 = W_STD**2 * np.sum(x2**2, 1) / d + B_STD**2
    scale = np.sqrt(np.outer(q1, q2))
    k0, k1 = arccos_kernels(sigma1 / scale)
    nngp = W_STD**2 * scale * k1 / 2 + B_STD**2
    return nngp, nngp + W_STD**2 * k0 / 2 * sigma1


def network(width):
    return stax.serial(stax.Dense(width, W_STD, B_STD), stax.Relu(), stax.Dense(1, W_STD, B_STD))


def main(argv=None):
    args = parse_args(__doc__, argv)
    checks = Checks()
    gamma = np.linspace(0, np.pi, 64)
    x1, x2 = np.stack([np.cos(gamma), np.sin(gamma)], 1), np.array([[1.0, 0.0]])
    nngp, ntk = closed_form(x1, x2)

    kernels = network(1)[2](x1, x2, ("nngp", "ntk"))
    err = [np.abs(k - ref).max() / np.abs(ref).max() for k, ref in ((kernels.nngp, nngp), (kernels.ntk, ntk))]
    print(f"layer recursion vs closed form: NNGP {err[0]:.1e}, NTK {err[1]:.1e} (relative)")
    checks("the layer recursion equals the arc-cosine closed form", max(err) <= 1e-12,
           f"max relative difference {max(err):.1e} <= 1e-12")

    widths = 2 ** np.arange(8, 17 if args.full else 15, 2)
    empirical, errors = {}, []
    print(f"{'width m':>8} {'max|Θ̂−Θ|/maxΘ':>15} {'·√m':>6}")
    for m in widths:
        init_fn, apply_fn, _ = network(int(m))
        _, params = init_fn(args.seed, x1.shape)
        empirical[m] = empirical_ntk_fn(apply_fn)(x1, x2, params)[:, 0]
        errors.append(np.abs(empirical[m] - ntk[:, 0]).max() / ntk.max())
        print(f"{m:>8} {errors[-1]:>15.2e} {errors[-1] * np.sqrt(m):>6.2f}")
    wide = widths[-1]
    checks(f"the empirical NTK at width {wide} is within 5/√m of Θ", errors[-1] <= 5 / np.sqrt(wide),
           f"{errors[-1]:.2e} <= {5 / np.sqrt(wide):.2e}")
    checks("the empirical NTK's error falls with width", errors[-1] < errors[0],
           f"{errors[-1]:.2e} (m={wide}) < {errors[0]:.2e} (m={widths[0]})")

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(gamma, ntk[:, 0], "k-", label="Θ closed form")
    ax[0].plot(gamma[::4], kernels.ntk[::4, 0], "ko", mfc="none", label="Θ layer recursion")
    ax[0].plot(gamma, nngp[:, 0], "k--", label="Σ closed form")
    for m in (widths[0], wide):
        ax[0].plot(gamma, empirical[m], ".", ms=3, label=f"empirical NTK, m={m}")
    ax[0].set(xlabel="angle γ between x and x′", ylabel="kernel", title="one hidden ReLU layer")
    ax[0].legend(fontsize=7)
    ax[1].loglog(widths, errors, "o-", label="max |Θ̂ − Θ| / max Θ")
    ax[1].loglog(widths, 5 / np.sqrt(widths), "k:", label="5/√m (asserted bound)")
    ax[1].set(xlabel="width m", title="empirical → infinite-width NTK")
    ax[1].legend(fontsize=7)
    save(fig, args, "one_hidden_layer")
    return checks.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
