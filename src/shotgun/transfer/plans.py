"""Cross-validation plans of transfer: the screen, nested CV and learning curves as selections.

A *task* is one model selection: choose, by cross-validation inside ``train``, the best of all
pipelines (candidate features x learner), then predict ``test`` with it fitted on ``train``. The
plain screen is the task on all rows (its inner folds are the reported CV folds); nested CV is one
task per outer fold; a learning-curve point is one task per outer fold on a subsample of its
training rows. Every task needs the same thing from every pipeline, predictions on a list of
(train, test) *pairs*, so pairs are collected once and each pipeline is evaluated on all of them.

Rows that must not be scored (inputs a kept source model was trained on: the leakage guard) are
in the training rows of every pair and in no test rows; the splits are drawn over the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("random", "extrapolate")
CURVE_SIZES = (5, 10, 20, 40)
NESTED_MAX_ROWS = 2000  # nested CV is on by default up to this many target rows


def make_splits(
    y: np.ndarray, folds: int, seed: int, repeats: int = 1, split: str = "random"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) positions into ``y``: shuffled K-fold (repeated with new shuffles), or
    ``extrapolate``: train on the lowest 80 % of target values, test on the top 20 %."""
    from sklearn.model_selection import KFold, RepeatedKFold

    n = len(y)
    if split == "extrapolate":
        order = np.argsort(y, kind="stable")
        n_test = max(1, int(np.ceil(0.2 * n)))
        return [(np.sort(order[:-n_test]), np.sort(order[-n_test:]))]
    if split != "random":
        raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    k = min(folds, n)
    if repeats == 1:
        return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(y))
    return list(RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed).split(y))


@dataclass
class Task:
    """One selection: inner pairs score the pipelines, ``test_pair`` (if any) is the outer test."""

    name: str
    train: np.ndarray
    inner: list[int]
    test_pair: int | None = None
    n: int = 0  # training rows (learning curve)


@dataclass
class Plan:
    pairs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)

    def add_pair(self, train, test) -> int:
        self.pairs.append((np.asarray(train), np.asarray(test)))
        return len(self.pairs) - 1

    def add_task(self, name, train, splits, test=None, n=0) -> Task:
        """``splits`` (inner pairs) and ``test`` hold positions into all rows."""
        train = np.asarray(train)
        inner = [self.add_pair(a, b) for a, b in splits]
        test_pair = None if test is None else self.add_pair(train, test)
        task = Task(name, train, inner, test_pair, n or len(train))
        self.tasks.append(task)
        return task


def build_plan(
    y: np.ndarray,
    folds: int,
    seed: int,
    repeats: int = 1,
    split: str = "random",
    nested: bool = True,
    curve: Sequence[int] = CURVE_SIZES,
    scored: np.ndarray | None = None,
) -> Plan:
    """The screen on all rows; with ``nested``, one task per outer fold (inner splits of the same
    kind inside its training rows), and learning-curve tasks on seeded subsamples of size ``curve``
    of each outer training fold (only sizes smaller than that fold). Rows where ``scored`` is
    False are training rows of every pair (all rows are scored by default)."""
    scored = np.ones(len(y), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)

    def splits(rows, k, seed, repeats=1):  # positions into all rows
        s, fixed = rows[scored[rows]], rows[~scored[rows]]
        return [
            (np.sort(np.concatenate([fixed, s[a]])), s[b])
            for a, b in make_splits(y[s], k, seed, repeats, split)
        ]

    plan = Plan()
    outer = splits(np.arange(len(y)), folds, seed, repeats)
    plan.add_task("screen", np.arange(len(y)), outer)
    if not nested:
        return plan
    rng = np.random.default_rng(seed)
    for o, (train, test) in enumerate(outer):
        plan.add_task(f"nested/{o}", train, splits(train, folds, seed + 1 + o), test)
        for n in curve:
            if n >= len(train):
                continue
            sub = np.sort(rng.choice(train, size=n, replace=False))
            if scored[sub].sum() < 2:  # a subsample of rows that are never scored
                continue
            plan.add_task(f"curve/{n}/{o}", sub, splits(sub, folds, seed + 1 + o), test, n)
    return plan


def oof(plan: Plan, pairs: Sequence[int], preds: Sequence[np.ndarray]):
    """(rows, predictions) concatenated over ``pairs``: out-of-fold predictions."""
    rows = np.concatenate([plan.pairs[p][1] for p in pairs])
    return rows, np.concatenate([preds[p] for p in pairs])
