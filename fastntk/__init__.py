"""fastntk: Neural Tangent Kernels, fast.

Infinite-width NNGP and NTK of fully-connected and convolutional networks (``fastntk.stax``, a
drop-in for ``neural_tangents.stax``), computed by fused C++ recursions over BLAS Gram tiles; the
empirical NTK of finite networks (``fastntk.empirical``); kernel regression and training
dynamics (``fastntk.predict``, ``fastntk.spectrum``, ``fastntk.solvers``); random feature maps of
the kernels (``fastntk.features``); look-ahead active learning (``fastntk.active``);
scikit-learn estimators (``fastntk.sklearn``).
"""

from . import activations, active, empirical, features, predict, spectrum, stax
from ._types import Kernel
from .batching import batch
from .empirical import (
    NtkImplementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    empirical_ntk_vp_fn,
    linearize,
    monte_carlo_kernel_fn,
    pseudo_ntk,
    taylor_expand,
)
from ._backend import get_num_threads, set_num_threads

__version__ = "0.1.0"
__all__ = [
    "Kernel",
    "NtkImplementation",
    "__version__",
    "activations",
    "active",
    "batch",
    "empirical",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "features",
    "get_num_threads",
    "linearize",
    "monte_carlo_kernel_fn",
    "predict",
    "pseudo_ntk",
    "set_num_threads",
    "spectrum",
    "stax",
    "taylor_expand",
]
