"""asv: random features of the NTK (fastntk.features), the unit cost of the 'features' solver.

The side-by-side comparison with the authors' NTKRF is ``benchmarks/compare_features.py``.
"""

import numpy as np

from fastntk import stax
from fastntk.features import random_features


def sphere(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class RandomFeatures:
    """Draw and transform: N = 4000 points on the unit sphere in d = 64, bias-free ReLU NTK, float32."""

    params = ([1, 3], [1024, 4096])
    param_names = ["depth", "n_features"]

    def setup(self, depth, n_features):
        self.kernel_fn = stax.fc_network(depth, "relu", np.sqrt(2), None)[2]
        self.x = sphere(4000, 64).astype(np.float32)
        self.map = random_features(self.kernel_fn, 64, "ntk", n_features, seed=0, dtype=np.float32)

    def time_draw(self, depth, n_features):
        random_features(self.kernel_fn, 64, "ntk", n_features, seed=0, dtype=np.float32)

    def time_transform(self, depth, n_features):
        self.map.transform(self.x)

    def track_relative_error(self, depth, n_features):
        """‖Φ Φᵀ − K‖_F/‖K‖_F on the first 1000 points (one draw, seed 0)."""
        x = self.x[:1000].astype(np.float64)
        phi = self.map.transform(self.x[:1000]).astype(np.float64)
        k = self.kernel_fn(x, None, "ntk")
        return float(np.linalg.norm(phi @ phi.T - k) / np.linalg.norm(k))
