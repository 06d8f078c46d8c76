"""Float64 buffers kept between calls: a fresh buffer costs a page fault per 4 KiB page on first touch,
so drivers that work block by block take their block buffers from :data:`POOL` and give them back when
a call ends."""

from __future__ import annotations

import threading

__all__ = ["POOL", "Pool"]


class Pool:
    """Buffers (1-D NumPy arrays) kept between calls, at most ``limit`` bytes, under a lock: calls from
    several threads take distinct buffers."""

    def __init__(self, limit):
        self.limit, self._buffers, self._lock = limit, [], threading.Lock()

    def get(self, n):
        """The smallest kept buffer of at least ``n`` entries (removed from the pool), or None."""
        with self._lock:
            fits = [b for b in self._buffers if b.size >= n]
            if not fits:
                return None
            buf = min(fits, key=lambda b: b.size)
            self._buffers = [b for b in self._buffers if b is not buf]
            return buf

    def put(self, buffers):
        """Keep ``buffers`` (no longer referenced by anyone), the smallest first, up to the limit."""
        with self._lock:
            kept, total = [], 0
            for b in sorted(self._buffers + list(buffers), key=lambda b: b.size):
                if total + b.nbytes <= self.limit:
                    kept.append(b)
                    total += b.nbytes
            self._buffers = kept


#: The block buffers of the convolutional driver (fastntk._conv), kept between calls: 64 MiB.
POOL = Pool(64 * 2**20)
