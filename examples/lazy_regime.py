"""Lazy regime: the wider the network, the less its weights and its NTK move in training (∝ width^(−1/2)).

Claim (seed 000 §1.3 and seed 001 §1.8; Lee et al. 2019, arXiv:1902.06720, Theorem 2.1 and
Figure 1; Chizat, Oyallon & Bach 2019): under full-batch gradient descent on the squared loss, a
network in the NTK parameterization of width m moves its weights by ‖θ_T − θ₀‖/‖θ₀‖ = O(m^(−1/2)),
its empirical NTK by ‖Θ̂_T − Θ̂₀‖_F/‖Θ̂₀‖_F = O(m^(−1/2)), and stays within O(m^(−1/2)) of its
linearisation f_lin(θ) = f(θ₀) + J₀(θ − θ₀) trained by the same gradient descent.

The run (``fastntk.empirical.train_and_track``): one hidden ReLU layer (so ‖θ₀‖ ∝ √m; with m × m
hidden layers ‖θ₀‖ ∝ m and the weights' relative change falls like 1/m), 32 training points in
d = 5 with targets sin(x₁) + noise, 16 test points, widths 64 … 4096 (factors of 4), the same
100 steps at learning rate 0.5 · 2n/λ_max(Θ̂₀) (half the stable step of the linearised model).

Asserted, at the end of training: the least-squares slope of log(quantity) against log(m) is in
[−0.7, −0.4] for the weights' relative change, and ≤ −0.4 for the kernel's change and the
linearisation gap. Lee et al. prove O(m^(−1/2)) for all three: for the weights it is the rate
(‖θ_T − θ₀‖ = O(1) while ‖θ₀‖ ∝ √m; measured −0.51 … −0.60 for seeds 0–2), for the other two an
upper bound (measured −0.62 … −0.88: the one-hidden-layer kernel moves less than the bound allows).
The margins cover the sampling noise of one initialisation per width and still tell a shrinking
change from none (slope 0). And the training loss has fallen by 10× at every width, so the
comparison is between networks that have learned.

Run: python examples/lazy_regime.py --out DIR   (--full: widths to 65536)
"""

import numpy as np
from _common import Checks, parse_args, plt, power_law, save

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn, train_and_track
from fastntk.predict import max_learning_rate

QUANTITIES = {"param_change": "‖θ_T − θ₀‖/‖θ₀‖", "kernel_change": "‖Θ̂_T − Θ̂₀‖/‖Θ̂₀‖",
              "lin_gap": "max |f − f_lin| (test)"}


def network(width):
    return stax.serial(stax.Dense(width, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))


def main(argv=None):
    args = parse_args(__doc__, argv)
    checks = Checks()
    rng = np.random.default_rng(args.seed)
    x_train, x_test = rng.standard_normal((32, 5)), rng.standard_normal((16, 5))
    y_train = np.sin(x_train[:, :1]) + 0.1 * rng.standard_normal((32, 1))
    widths, n_steps = 4 ** np.arange(3, 9 if args.full else 7), 100
    records = {}
    print(f"{'width':>6} {'loss T/0':>9} " + " ".join(f"{q:>13}" for q in QUANTITIES), flush=True)
    for m in widths:
        init_fn, apply_fn, _ = network(int(m))
        _, params = init_fn(args.seed, x_train.shape)
        lr = 0.5 * max_learning_rate(empirical_ntk_fn(apply_fn)(x_train, None, params), y_train.size)
        rec = records[m] = train_and_track(apply_fn, params, x_train, y_train, x_test, learning_rate=lr,
                                           n_steps=n_steps, record_every=n_steps // 4)
        print(f"{m:>6} {rec['loss'][-1] / rec['loss'][0]:>9.2e} "
              + " ".join(f"{rec[q][-1]:>13.3e}" for q in QUANTITIES), flush=True)
    worst = max(records[m]["loss"][-1] / records[m]["loss"][0] for m in widths)
    checks("every width has learned", worst < 0.1, f"final / initial training loss <= {worst:.2e} < 0.1")
    slopes = {q: power_law(widths, [records[m][q][-1] for m in widths])[0] for q in QUANTITIES}
    checks("the weights' relative change shrinks like width^(-1/2)", -0.7 <= slopes["param_change"] <= -0.4,
           f"fitted slope {slopes['param_change']:.3f} in [-0.7, -0.4]")
    for q in ("kernel_change", "lin_gap"):
        checks(f"{q} shrinks at least like width^(-1/2)", slopes[q] <= -0.4, f"fitted slope {slopes[q]:.3f} <= -0.4")

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for q, label in QUANTITIES.items():
        ax[0].loglog(widths, [records[m][q][-1] for m in widths], "o-", label=f"{label}: slope {slopes[q]:.2f}")
    ax[0].loglog(widths, 0.5 * records[widths[0]]["kernel_change"][-1] * np.sqrt(widths[0] / widths), "k:",
                 label="∝ m^(−1/2)")
    ax[0].set(xlabel="width m", title=f"after {n_steps} steps of gradient descent")
    ax[0].legend(fontsize=7)
    for m in widths:
        ax[1].plot(records[m]["step"], records[m]["kernel_change"], "o-", ms=3, label=f"m = {m}")
    ax[1].set(xlabel="step", ylabel="‖Θ̂_t − Θ̂₀‖_F / ‖Θ̂₀‖_F", yscale="log", title="the NTK during training")
    ax[1].legend(fontsize=7)
    save(fig, args, "lazy_regime")
    return checks.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
