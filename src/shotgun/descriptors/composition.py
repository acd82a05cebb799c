"""Composition descriptor for inorganic formulas (XenonPy-style element statistics).

Each formula is parsed with pymatgen's ``Composition`` into element amounts
``a_i``; ``w_i = a_i / sum(a)`` are the atomic fractions. For every column ``f``
of the element table (``data/elements.csv``, 94 elements x 58 features) the
following statistics are available:

``mean``  sum_i w_i f_i
``sum``   sum_i a_i f_i
``var``   sum_i w_i (f_i - mean)^2
``max``   max_i f_i
``min``   min_i f_i
``gmean`` exp(sum_i w_i log(f_i + c)) - c
``hmean`` 1 / sum_i (w_i / (f_i + c)) - c

Every statistic covers all 58 columns. The shift ``c`` is 0 for the columns that
are strictly positive for all 94 elements (plain geometric and harmonic means)
and ``1 - min(f)`` (min over H..Pu, in the column's unit) for the 14 columns
with zero or negative values (valence/unfilled electron counts, band gap,
magnetic moment, electron affinity, DFT energy, log10 resistivity), so the
shifted values are >= 1 and the means finite. Subtracting ``c`` keeps the result
in the column's unit, equal to ``f`` for a pure element, and ordered
``min <= hmean <= gmean <= mean <= max`` as for plain means.

Feature names are ``"<stat>:<column>"``, grouped by statistic in the order
given in ``stats`` (default: the "classic" five, 290 features; all seven give
406). ``version`` is "1" for stats without ``gmean``/``hmean`` (outputs unchanged
since the first release) and "2" otherwise (version 1 gave those two only for
the positive columns).

``feature_space()`` names the layout of the vector, ``"composition:<version>:
<params>"``; ``organic_composition`` with the same ``stats`` returns the same
string, so a model trained on one can consume the other.

A formula is rejected (``ok=False``, NaN row) when it is empty, cannot be
parsed, contains an element outside H..Pu (or a dummy symbol), or has an
explicit zero or a negative amount.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from ..data.inputs import parse_formula as element_amounts
from .base import Descriptor, canonical_json, register

_TABLE_PATH = Path(__file__).with_name("data") / "elements.csv"
STATS = ("mean", "sum", "var", "max", "min", "gmean", "hmean")
CLASSIC_STATS = ("mean", "sum", "var", "max", "min")
_ROWS_PER_BLOCK = 8192


@lru_cache(maxsize=1)
def load_element_table() -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(element symbols, feature columns, float64 values of shape (94, 58))."""
    with open(_TABLE_PATH) as fh:
        header = fh.readline().rstrip("\n").split(",")[1:]
        symbols, rows = [], []
        for line in fh:
            parts = line.rstrip("\n").split(",")
            symbols.append(parts[0])
            rows.append([float(x) for x in parts[1:]])
    values = np.asarray(rows, dtype=np.float64)
    values.setflags(write=False)
    return tuple(symbols), tuple(header), values


@lru_cache(maxsize=1)
def _symbol_index() -> dict[str, int]:
    return {s: i for i, s in enumerate(load_element_table()[0])}


def parse_formula(formula: str) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Element-table row indices and amounts of ``formula``; None if invalid or if an element is
    outside the table (H..Pu)."""
    amounts = element_amounts(formula)
    if amounts is None:
        return None
    index = _symbol_index()
    if any(symbol not in index for symbol in amounts):
        return None
    return tuple(index[symbol] for symbol in amounts), tuple(float(a) for a in amounts.values())


@lru_cache(maxsize=1)
def mean_shift() -> np.ndarray:
    """Per-column shift ``c`` of the geometric and harmonic means (0 for positive columns)."""
    lo = load_element_table()[2].min(axis=0)
    c = np.where(lo > 0, 0.0, 1.0 - lo)
    c.setflags(write=False)
    return c


class ElementStatistics(Descriptor):
    """Element-table statistics of compositions; subclasses provide ``parse``."""

    def __init__(self, stats: list[str] | tuple[str, ...] = CLASSIC_STATS):
        stats = [stats] if isinstance(stats, str) else list(stats)
        unknown = [s for s in stats if s not in STATS]
        if unknown or not stats or len(set(stats)) != len(stats):
            raise ValueError(f"stats must be distinct names from {STATS}, got {stats}")
        self.params = {"stats": stats}
        columns = load_element_table()[1]
        self._names = [f"{s}:{c}" for s in stats for c in columns]

    @property
    def composition_version(self) -> str:
        return "1" if set(self.params["stats"]) <= set(CLASSIC_STATS) else "2"

    def feature_space(self) -> str:
        return f"composition:{self.composition_version}:{canonical_json(self.params)}"

    def feature_names(self) -> list[str]:
        return list(self._names)

    def parse(self, s: str) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        raise NotImplementedError

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        inputs = list(inputs)
        n = len(inputs)
        X = np.full((n, len(self._names)), np.nan, dtype=np.float32)
        cache: dict[str, tuple | None] = {}
        parsed = []
        for s in inputs:
            key = s if isinstance(s, str) else None
            if key not in cache:
                cache[key] = self.parse(s) if key is not None else None
            parsed.append(cache[key])
        ok = np.array([p is not None for p in parsed], dtype=bool)
        rows = np.flatnonzero(ok)
        for start in range(0, len(rows), _ROWS_PER_BLOCK):
            block = rows[start : start + _ROWS_PER_BLOCK]
            X[block] = self._compute([parsed[i] for i in block])
        return X, ok

    def _compute(self, parsed: list[tuple]) -> np.ndarray:
        """Statistics for valid parsed formulas, shape (len(parsed), n_features)."""
        values = load_element_table()[2]
        m = len(parsed)
        k = max(len(p[0]) for p in parsed)
        # Padded (m, k) element indices and amounts; padding has amount 0 and
        # repeats the first element so that max/min are unaffected.
        lens = np.fromiter((len(p[0]) for p in parsed), dtype=np.intp, count=m)
        total = int(lens.sum())
        flat_idx = np.fromiter(
            chain.from_iterable(p[0] for p in parsed), dtype=np.intp, count=total
        )
        flat_amt = np.fromiter(
            chain.from_iterable(p[1] for p in parsed), dtype=np.float64, count=total
        )
        starts = np.cumsum(lens) - lens
        rows = np.repeat(np.arange(m), lens)
        cols = np.arange(total) - np.repeat(starts, lens)
        idx = np.repeat(flat_idx[starts, None], k, axis=1)
        idx[rows, cols] = flat_idx
        amt = np.zeros((m, k), dtype=np.float64)
        amt[rows, cols] = flat_amt
        w = amt / amt.sum(axis=1, keepdims=True)
        F = values[idx]  # (m, k, 58)

        def wsum(arr: np.ndarray, weights: np.ndarray) -> np.ndarray:
            # sequential accumulation over elements: row results do not depend on the batch
            acc = weights[:, 0, None] * arr[:, 0]
            for j in range(1, k):
                acc += weights[:, j, None] * arr[:, j]
            return acc

        stats = self.params["stats"]
        mean = wsum(F, w) if ("mean" in stats or "var" in stats) else None
        shift = mean_shift()
        out = []
        for s in stats:
            if s == "mean":
                out.append(mean)
            elif s == "sum":
                out.append(wsum(F, amt))
            elif s == "var":
                out.append(wsum((F - mean[:, None, :]) ** 2, w))
            elif s == "max":
                out.append(F.max(axis=1))
            elif s == "min":
                out.append(F.min(axis=1))
            elif s == "gmean":
                out.append(np.exp(wsum(np.log(F + shift), w)) - shift)
            elif s == "hmean":
                out.append(1.0 / wsum(1.0 / (F + shift), w) - shift)
        return np.concatenate(out, axis=1)


@register
class CompositionDescriptor(ElementStatistics):
    name = "composition"
    kinds = ("inorganic",)

    @property
    def version(self) -> str:
        return self.composition_version

    def parse(self, s: str):
        return parse_formula(s)
