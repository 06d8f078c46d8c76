"""Plain NumPy implementations that read like the maths: the oracle for every backend.

* :mod:`.fc`: the layer recursion of networks without spatial axes (Dense, activations, branches);
* :mod:`.conv`: the same with spatial axes (Conv, pooling, Flatten, LayerNorm), as explicit
  position-by-position covariances;
* :mod:`.sketch`: the Walsh–Hadamard transform and TensorSRHT of the random features.
"""

from .conv import conv_kernels
from .fc import _gauss_hermite_dual, dual, infinite_kernels, rho_tolerance
from .sketch import fwht, tensor_srht

__all__ = ["_gauss_hermite_dual", "conv_kernels", "dual", "fwht", "infinite_kernels", "rho_tolerance", "tensor_srht"]
