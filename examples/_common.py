"""What every example shares: its command line, its checks, its power-law fits and its figure.

An example is a script ``examples/NAME.py`` whose ``main(argv=None) -> int``:

1. ``args = parse_args(__doc__, argv)``: ``--out DIR`` (created; default the current directory),
   ``--full`` (the larger run a paper would show) and ``--seed`` (default 0);
2. computes, prints the numbers it checks, and records each asserted claim with
   ``checks(what, ok, detail)``;
3. draws with matplotlib (the Agg backend: no display needed) and writes ``save(fig, args, NAME)``
   → ``DIR/NAME.png``;
4. returns ``checks.exit_code()``: 0 when every check held, 1 otherwise, after printing what did
   not hold. The script ends with ``raise SystemExit(main())``.

Run one with ``python examples/NAME.py --out DIR``; ``tests/test_examples.py`` runs every example
at its default size, so none rots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

__all__ = ["Checks", "parse_args", "plt", "power_law", "save"]


def parse_args(doc, argv=None, configure=None):
    """The example's arguments: ``out`` (a Path, created), ``full`` (bool), ``seed`` (int).

    Parameters
    ----------
    doc : str, the example's docstring (its first line is the ``--help`` description).
    argv : list of str or None (``sys.argv[1:]``).
    configure : callable or None, ``configure(parser)`` adds the example's own options.
    """
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the figures (created)")
    parser.add_argument("--full", action="store_true", help="the larger run a paper would show")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


class Checks:
    """The claims an example asserts: each is printed as it is checked; ``exit_code`` sums them up."""

    def __init__(self):
        self.failed = []

    def __call__(self, what, ok, detail=""):
        """Record one claim: ``what`` (the claim), ``ok`` (whether it held), ``detail`` (the numbers)."""
        ok = bool(ok)
        print(f"[{'ok' if ok else 'FAILED'}] {what}{': ' + detail if detail else ''}", flush=True)
        if not ok:
            self.failed.append(f"{what}: {detail}" if detail else what)
        return ok

    def exit_code(self):
        """0 when every claim held; otherwise print the ones that did not and return 1."""
        if self.failed:
            print(f"{len(self.failed)} claim(s) did not hold:")
            for line in self.failed:
                print(f"  - {line}")
            return 1
        print("every claim held")
        return 0


def power_law(x, y):
    """The least-squares fit y ≈ c·x^slope on log–log axes: ``(slope, fit)``, ``fit(x)`` = c·x^slope."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return slope, lambda x_: np.exp(intercept) * np.asarray(x_, float) ** slope


def save(fig, args, name):
    """Write ``fig`` to ``args.out / f'{name}.png'`` (100 dpi), close it and return the path."""
    path = args.out / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path
