"""fastntk: Neural Tangent Kernels, fast.

Infinite-width NNGP and NTK of fully-connected networks (``fastntk.stax``, a drop-in for
``neural_tangents.stax``), computed by a fused C++ recursion over BLAS Gram tiles.
"""

from . import activations, predict, stax
from ._backend import get_num_threads, set_num_threads

__version__ = "0.1.0"
__all__ = ["__version__", "activations", "get_num_threads", "predict", "set_num_threads", "stax"]
