"""Lazy (NTK) regime: how far a network moves from its linearization during training, by width.

Run: python examples/lazy_regime.py
Prints, per width m, ‖θ_T − θ₀‖/‖θ₀‖, ‖Θ̂_T − Θ̂₀‖_F/‖Θ̂₀‖_F, max|f − f_lin| and max|f − f_KR| on
held-out points after full-batch gradient descent, where f_KR = f₀ + Θ̂₀(x, X)Θ̂₀⁻¹(y − f₀) is kernel
regression with the initial NTK; all shrink roughly like 1/√m (Lee et al. 2019, arXiv:1902.06720).
"""

import numpy as np

from fastntk import stax
from fastntk.empirical import empirical_ntk_fn, train_and_track
from fastntk.predict import max_learning_rate


def main(widths=(32, 128, 512), n_steps=1000, seed=0):
    rng = np.random.default_rng(seed)
    x_train, x_test = rng.standard_normal((32, 5)), rng.standard_normal((16, 5))
    y_train = np.sin(x_train[:, :1]) + 0.1 * rng.standard_normal((32, 1))
    print(f"{'width':>6} {'loss':>10} {'param_change':>13} {'kernel_change':>14} {'lin_gap':>10} {'kr_gap':>10}")
    for m in widths:
        init_fn, apply_fn, _ = stax.serial(stax.Dense(m, 1.5, 0.1), stax.Relu(), stax.Dense(m, 1.5, 0.1), stax.Relu(),
                                           stax.Dense(1, 1.5, 0.1))
        _, params = init_fn(seed, x_train.shape)
        lr = 0.9 * max_learning_rate(empirical_ntk_fn(apply_fn)(x_train, None, params), y_train.size)
        rec = train_and_track(apply_fn, params, x_train, y_train, x_test, learning_rate=lr, n_steps=n_steps,
                              record_every=n_steps)
        print(f"{m:>6} {rec['loss'][-1]:>10.2e} {rec['param_change'][-1]:>13.3e} {rec['kernel_change'][-1]:>14.3e} "
              f"{rec['lin_gap'][-1]:>10.3e} {rec['kr_gap'][-1]:>10.3e}")


if __name__ == "__main__":
    main()
