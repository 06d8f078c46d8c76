"""Infinite-width NNGP + NTK of convolutional ReLU networks (fastntk.stax.kernel_fn).

Run from the repository root, in the environment where fastntk is installed::

    asv machine --yes
    asv run --python=same --quick --bench "ReluCnn"

Network (compare_cnn.relu_cnn): three Conv(512, (3, 3), padding='SAME', W_std=√2, b_std=0.1) + Relu
layers, a GlobalAvgPool or Flatten readout, Dense(1, W_std=√2, b_std=0.1); standard-normal
float64 images (N, 8, 8, 3) (seed 0), kernels of x against itself (x2=None), get=('nngp', 'ntk').
N = 32 keeps each call short enough for CI. The side-by-side comparison with neural-tangents,
at N = 64 and 512 and on Myrtle-5, is compare_cnn.py.
"""

import numpy as np

from fastntk import stax

from .compare_cnn import GET, RELU_CNN_IMAGES, relu_cnn  # the networks of the side-by-side script


class ReluCnn:
    """kernel_fn(x, None, ('nngp', 'ntk')) of the depth-3 ReLU CNN, both readouts."""

    params = ([32], ["GlobalAvgPool", "Flatten"])
    param_names = ["N", "readout"]

    def setup(self, N, readout):
        self.x = np.random.default_rng(0).standard_normal((N, *RELU_CNN_IMAGES))
        self.kernel_fn = relu_cnn(stax, readout)[2]

    def time_kernel(self, N, readout):
        self.kernel_fn(self.x, None, GET)

    def peakmem_kernel(self, N, readout):
        self.kernel_fn(self.x, None, GET)
