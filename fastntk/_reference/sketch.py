"""Random features and sketches in plain NumPy: the oracle of ``cpp/include/fastntk/sketch.hpp``."""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["fwht", "tensor_srht"]


def fwht(a):
    """The unnormalised Walsh–Hadamard transform of each row: ``a @ H_n``.

    a: (n_rows, n), n = 2^k ≥ 1. H_n is Sylvester's Hadamard matrix (entries ±1, symmetric,
    H_2n = [[H_n, H_n], [H_n, −H_n]]). Returns (n_rows, n) float64.
    """
    a = np.asarray(a, dtype=np.float64)
    return a @ scipy.linalg.hadamard(a.shape[1]).astype(np.float64)


def tensor_srht(x, y, signs_x, signs_y, index_x, index_y):
    """TensorSRHT of the row pairs (x[i], y[i]) (Ahle et al. 2020; Zandieh et al. 2021).

    x: (N, p), y: (N, q); signs_x: (P,), signs_y: (Q,) (±1), P ≥ p and Q ≥ q powers of 2;
    index_x: (m,) in [0, P), index_y: (m,) in [0, Q). With x̃, ỹ the rows zero-padded to P, Q,
    a = H_P (s_x ∘ x̃), b = H_Q (s_y ∘ ỹ), returns out (N, m) float64,
    out[i, j] = a[index_x[j]] · b[index_y[j]] / √m, a sketch of x[i] ⊗ y[i] (p·q,) with
    E_signs ⟨out[i], out[k]⟩ = ⟨x[i], x[k]⟩ ⟨y[i], y[k]⟩.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    signs_x, signs_y = np.asarray(signs_x, dtype=np.float64), np.asarray(signs_y, dtype=np.float64)
    P, Q, m = len(signs_x), len(signs_y), len(index_x)
    x_pad = np.zeros((len(x), P))
    x_pad[:, : x.shape[1]] = x
    y_pad = np.zeros((len(y), Q))
    y_pad[:, : y.shape[1]] = y
    a = (x_pad * signs_x) @ scipy.linalg.hadamard(P).astype(np.float64)  # rows of H_P (s_x ∘ x̃), H symmetric
    b = (y_pad * signs_y) @ scipy.linalg.hadamard(Q).astype(np.float64)
    return a[:, index_x] * b[:, index_y] / np.sqrt(m)
