"""The buffer pool kept between calls (fastntk._pool)."""

import numpy as np

from fastntk._pool import Pool


def test_get_gives_the_smallest_buffer_that_fits_once():
    pool = Pool(1 << 20)
    small, large = np.empty(10), np.empty(100)
    pool.put([large, small])
    assert pool.get(101) is None
    assert pool.get(5) is small
    assert pool.get(5) is large  # small is taken
    assert pool.get(1) is None


def test_put_keeps_the_smallest_buffers_within_the_limit():
    pool = Pool(8 * 150)
    buffers = [np.empty(n) for n in (100, 40, 60, 10)]
    pool.put(buffers)
    kept = sorted(b.size for b in (pool.get(1), pool.get(1), pool.get(1)) if b is not None)
    assert kept == [10, 40, 60]  # 100 more would pass the limit
