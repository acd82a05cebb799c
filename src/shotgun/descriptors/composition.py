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
``gmean`` exp(sum_i w_i log f_i)
``hmean`` 1 / sum_i (w_i / f_i)

``gmean`` and ``hmean`` are only produced for the columns whose values are
strictly positive for all 94 elements; other columns get no such feature, so
their outputs are always finite. Feature names are ``"<stat>:<column>"``,
grouped by statistic in the order given in ``stats``.

A formula is rejected (``ok=False``, NaN row) when it is empty, cannot be
parsed, contains an element outside H..Pu (or a dummy symbol), or has an
explicit zero or a negative amount.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from . import Descriptor

_TABLE_PATH = Path(__file__).with_name("data") / "elements.csv"
STATS = ("mean", "sum", "var", "max", "min", "gmean", "hmean")
CLASSIC_STATS = ("mean", "sum", "var", "max", "min")
_NUMBER = re.compile(r"\d*\.?\d+(?:[eE][-+]?\d+)?")
_SIMPLE_FORMULA = re.compile(r"(?:[A-Z][a-z]?(?:\d+(?:\.\d+)?|\.\d+)?)+")
_SIMPLE_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?|\.\d+)?")
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


def _parse_simple(formula: str) -> dict[str, float] | None:
    """Fast path for flat formulas such as "Fe2O3" made only of table elements.

    Gives the same amounts as pymatgen; returns None to defer to pymatgen.
    """
    if not _SIMPLE_FORMULA.fullmatch(formula):
        return None
    index = _symbol_index()
    amounts: dict[str, float] = {}
    for symbol, number in _SIMPLE_TOKEN.findall(formula):
        if symbol not in index:
            return None
        amounts[symbol] = amounts.get(symbol, 0.0) + (float(number) if number else 1.0)
    return amounts


def parse_formula(formula: str) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Element-table row indices and amounts of ``formula``; None if invalid."""
    if not isinstance(formula, str) or not formula.strip():
        return None
    # pymatgen silently drops zero amounts; reject them explicitly.
    if any(float(m) == 0.0 for m in _NUMBER.findall(formula)):
        return None
    amounts = _parse_simple(formula)
    if amounts is None:
        from pymatgen.core import Composition

        try:
            amounts = Composition(formula).get_el_amt_dict()
        except Exception:  # pymatgen raises several exception types on bad input
            return None
    index = _symbol_index()
    idx, amt = [], []
    for symbol, a in amounts.items():
        if symbol not in index or not np.isfinite(a) or a <= 0:
            return None
        idx.append(index[symbol])
        amt.append(float(a))
    if not idx:
        return None
    return tuple(idx), tuple(amt)


class CompositionDescriptor(Descriptor):
    name = "composition"
    version = "1"
    kinds = ("inorganic",)

    def __init__(self, stats: list[str] | tuple[str, ...] = CLASSIC_STATS):
        stats = [stats] if isinstance(stats, str) else list(stats)
        unknown = [s for s in stats if s not in STATS]
        if unknown or not stats or len(set(stats)) != len(stats):
            raise ValueError(f"stats must be distinct names from {STATS}, got {stats}")
        self.params = {"stats": stats}
        _, columns, values = load_element_table()
        self._positive = np.flatnonzero((values > 0).all(axis=0))
        names = []
        for s in stats:
            cols = self._positive if s in ("gmean", "hmean") else range(len(columns))
            names += [f"{s}:{columns[j]}" for j in cols]
        self._names = names

    def feature_names(self) -> list[str]:
        return list(self._names)

    def featurize(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        inputs = list(inputs)
        n = len(inputs)
        X = np.full((n, len(self._names)), np.nan, dtype=np.float32)
        cache: dict[str, tuple | None] = {}
        parsed = []
        for s in inputs:
            key = s if isinstance(s, str) else None
            if key not in cache:
                cache[key] = parse_formula(s) if key is not None else None
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
        flat_idx = np.fromiter(chain.from_iterable(p[0] for p in parsed), dtype=np.intp, count=total)
        flat_amt = np.fromiter(chain.from_iterable(p[1] for p in parsed), dtype=np.float64, count=total)
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
        out = []
        pos = self._positive
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
                out.append(np.exp(wsum(np.log(F[:, :, pos]), w)))
            elif s == "hmean":
                out.append(1.0 / wsum(1.0 / F[:, :, pos], w))
        return np.concatenate(out, axis=1)
