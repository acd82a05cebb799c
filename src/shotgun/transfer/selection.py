"""Selection among pipelines on a plan: the screen's scores, each task's chosen pipeline, the
stacked ensemble of the top K, the choice among methods, and the nested estimate and learning
curve built from them.

A pipeline is a dict (a candidate, depth and learner; or a baseline learner on a raw descriptor)
with its predictions on the plan's pairs. Choosing the best of many pipelines on the folds that
score it is optimistic; nested CV chooses inside each outer training fold and scores outside.

The choice among methods is one rule (:func:`select_method`): in a task, each method makes its
own choice on the task's inner folds (the best transfer pipeline, the mean of the top K distinct
transferred models, the best baseline, the best learner on the source models' predictions, and
the blend of the baseline's, the stack's and the properties' choices). By default the blend is
picked: on the quality benchmark it beat every other method and every rule that chose among
them; its methods are weighted out of fold (:func:`blend_weights`) when a task has rows enough
to fit weights, else equally (with rule "equal", always equally).
With rule "cv" the method is picked whose choosing does best when cross-validated over those
inner folds (:meth:`Screen.choice_mae`: chosen without each inner fold, scored on it). The
chosen pipeline's own inner MAE would favour the method that chooses among the most pipelines
(hundreds of transfer pipelines against two or three baselines), whatever it is worth on new
data. On the screen's task the rule picks the winner that is saved; inside each outer training
fold it gives the nested estimate of that whole procedure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..metrics import regression_metrics
from .plans import Plan, oof

# Learning-curve tasks compare the cheap learners only (they are many, most on a few rows).
CURVE_LEARNERS = {"transfer": ("ridge",), "baseline": ("ridge", "random_forest")}


def cv_metrics(y, rows, pred) -> dict:
    """``{"cv_mae", "cv_rmse", "cv_r2"}`` of predictions ``pred`` for rows ``rows`` of ``y``."""
    m = regression_metrics(y[rows], pred)
    return {"cv_mae": m["mae"], "cv_rmse": m["rmse"], "cv_r2": m["r2"]}


class Screen:
    """Pipelines evaluated on a plan: each has predictions on pairs and a score per task."""

    def __init__(self, plan: Plan, y: np.ndarray):
        self.plan, self.y = plan, y
        self.pipes: list[dict] = []
        self.scores: list[np.ndarray] = []  # per pipeline: inner MAE per task (NaN = not run)
        self._errors: dict = {}  # cache of _fold_errors and choices_without

    def add(self, pipe: dict, preds: dict):
        """``preds``: pair -> predictions; tasks whose pairs are all present get a score."""
        scores = np.full(len(self.plan.tasks), np.nan)
        for t, task in enumerate(self.plan.tasks):
            if all(p in preds for p in task.inner):
                err = [np.abs(preds[p] - self.y[self.plan.pairs[p][1]]) for p in task.inner]
                scores[t] = np.concatenate(err).mean()
        pipe["preds"] = preds
        self.pipes.append(pipe)
        self.scores.append(scores)

    def table(self) -> np.ndarray:
        return np.array(self.scores).reshape(len(self.pipes), len(self.plan.tasks))

    def chosen(self, t: int, k: int = 1, learners=None) -> list[int]:
        """The ``k`` best pipelines of task ``t`` (distinct models when k > 1), among those of
        ``learners`` if given."""
        s = self.table()[:, t]
        order = [
            i
            for i in np.argsort(s, kind="stable")
            if np.isfinite(s[i]) and (learners is None or self.pipes[i]["learner"] in learners)
        ]
        return self._first(order, k)

    def _first(self, order, k: int) -> list[int]:
        """The first ``k`` pipelines of ``order`` (of distinct models when k > 1)."""
        picked, seen = [], set()
        for i in order:
            key = self.pipes[i].get("model_id", self.pipes[i].get("name"))
            if k > 1 and key in seen:
                continue
            picked.append(i)
            seen.add(key)
            if len(picked) == k:
                break
        return picked

    def _fold_errors(self, t: int) -> tuple[list[int], np.ndarray]:
        """The pipelines scored in task ``t`` but not refined there and their summed absolute
        errors on each of its inner folds, (pipelines, folds); cached. A refined pipeline was
        picked for refinement on all of the task's inner folds, so its choice cannot be
        scored on one of them."""
        key = (t, len(self.pipes))
        if key not in self._errors:
            inner = self.plan.tasks[t].inner
            rows = [self.y[self.plan.pairs[p][1]] for p in inner]
            ok = [
                i
                for i, sc in enumerate(self.scores)
                if np.isfinite(sc[t]) and not self.pipes[i].get("refined")
            ]
            errors = np.array(
                [
                    [np.abs(self.pipes[i]["preds"][p] - y).sum() for p, y in zip(inner, rows)]
                    for i in ok
                ]
            ).reshape(len(ok), len(inner))
            self._errors[key] = ok, errors
        return self._errors[key]

    def choices_without(self, t: int, k: int = 1) -> list[list[dict]]:
        """For each inner fold of task ``t``: the ``k`` best pipelines (distinct models when
        k > 1) chosen on the task's other inner folds."""
        key = ("without", t, k, len(self.pipes))
        if key not in self._errors:
            inner = self.plan.tasks[t].inner
            n = np.array([len(self.plan.pairs[p][1]) for p in inner], dtype=float)
            ok, errors = self._fold_errors(t)
            out = []
            for f in range(len(inner)):
                rest = (errors.sum(axis=1) - errors[:, f]) / (n.sum() - n[f])
                picks = self._first([ok[j] for j in np.argsort(rest, kind="stable")], k)
                out.append([self.pipes[i] for i in picks])
            self._errors[key] = out
        return self._errors[key]

    def choice_mae(self, t: int, k: int = 1) -> float:
        """The MAE of choosing in task ``t``, cross-validated over its inner folds: for each
        inner fold, the ``k`` best pipelines (distinct models when k > 1) are chosen on the
        task's other inner folds and their mean prediction is scored on this one. Unlike the
        chosen pipeline's own inner MAE, this does not reward choosing among more pipelines, so
        it compares a method that picks one of hundreds with one that picks one of two. Refined
        pipelines (other learners on the best ridge pipelines) are left out of it: they were
        picked on all the inner folds."""
        y, oof, _ = out_of_fold_choices([(self, k)], t)
        return oof_mae(y, oof, _equal(1))

    def outer(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold predictions of pipeline ``i`` on the screen's folds."""
        return oof(self.plan, self.plan.tasks[0].inner, self.pipes[i]["preds"])

    def selected_predictions(self, tasks: Sequence[int], k: int = 1, learners=None):
        """Test predictions of each task's chosen pipeline (mean of the top k), concatenated."""
        rows, preds, chosen = [], [], []
        for t in tasks:
            task = self.plan.tasks[t]
            picks = self.chosen(t, k, learners)
            rows.append(self.plan.pairs[task.test_pair][1])
            preds.append(np.mean([self.pipes[i]["preds"][task.test_pair] for i in picks], axis=0))
            chosen.append([self.pipes[i] for i in picks])
        return np.concatenate(rows), np.concatenate(preds), chosen


def stack(screen: Screen, k: int) -> dict | None:
    """The same-fold stacked ensemble: the mean of the top ``k`` distinct transferred models,
    ``{"k", "model_ids", "cv_mae", "cv_rmse", "cv_r2"}``; None when ``k`` < 2 or fewer than two
    models."""
    top = screen.chosen(0, k)
    if k <= 1 or len(top) <= 1:
        return None
    rows, _ = screen.outer(top[0])
    mean = np.mean([screen.outer(i)[1] for i in top], axis=0)
    return {
        "k": len(top),
        "model_ids": [screen.pipes[i]["model_id"] for i in top],
        **cv_metrics(screen.y, rows, mean),
    }


def oof_mae(y: np.ndarray, oof: np.ndarray, weights: np.ndarray) -> float:
    """The MAE of the weighted mean of :func:`out_of_fold_choices` ``oof``: the
    :meth:`Screen.choice_mae` of a blend of those choices."""
    return float(np.abs(oof @ weights - y).mean())


def out_of_fold_choices(parts: Sequence[tuple[Screen, int]], t: int):
    """The target on task ``t``'s inner folds, one column per part ``(screen, k)`` the mean
    prediction of that method's choice made without each fold (the honest out-of-fold
    prediction of its choosing), and each row's inner fold: ``(y, (rows, parts), fold)``."""
    first = parts[0][0]
    inner = first.plan.tasks[t].inner
    without = [s.choices_without(t, k) for s, k in parts]
    y = [first.y[first.plan.pairs[p][1]] for p in inner]
    oof = np.column_stack(
        [np.concatenate([_mean_prediction(w[f], p) for f, p in enumerate(inner)]) for w in without]
    )
    return np.concatenate(y), oof, np.repeat(np.arange(len(inner)), [len(v) for v in y])


# The grid of the out-of-fold blend weights: multiples of 1/BLEND_STEPS summing to 1 (equal
# weights among 2, 3 or 4 methods on it).
BLEND_STEPS = 12
# The fewest rows (a task's inner folds together) on which the blend's weights are fitted by
# default (``--fit-weights-from``): fitted on 16-40 rows they did worse than equal weights,
# on 80-1,000 better (benchmarks/README.md).
FIT_WEIGHTS_FROM = 60


def blend_weights(
    y: np.ndarray, oof: np.ndarray, fold: np.ndarray, fit_from: int = 0
) -> np.ndarray:
    """Weights of the parts of a blend fitted out of fold on a task's inner folds, given their
    :func:`out_of_fold_choices` ``(y, oof, fold)``: the weights of the weighted mean of the
    parts' out-of-fold choices with the least MAE, on a grid over the simplex (steps of
    1/``BLEND_STEPS``; a tie goes to the weights nearest equal ones). Fitted only when the
    inner folds hold at least ``fit_from`` rows, and kept only when fitting them,
    cross-validated over the inner folds (fitted without each fold, scored on it), has the
    lower MAE than equal weights; else equal weights."""
    equal = _equal(oof.shape[1])
    if len(y) < fit_from:
        return equal
    grid = _simplex(oof.shape[1], BLEND_STEPS)
    near_equal = ((grid - equal[0]) ** 2).sum(axis=1)

    def fitted(rows: np.ndarray) -> np.ndarray:
        mae = np.abs(oof[rows] @ grid.T - y[rows, None]).mean(axis=0)
        return grid[np.lexsort((near_equal, np.round(mae, 12)))[0]]

    pred = np.empty(len(y))
    for f in np.unique(fold):
        pred[fold == f] = oof[fold == f] @ fitted(fold != f)
    if np.abs(pred - y).mean() < oof_mae(y, oof, equal):
        return fitted(np.ones(len(y), dtype=bool))
    return equal


def _simplex(parts: int, steps: int) -> np.ndarray:
    """Every weight vector of ``parts`` non-negative multiples of 1/``steps`` summing to 1."""
    grid = [c for c in product(range(steps + 1), repeat=parts) if sum(c) == steps]
    return np.array(grid, dtype=float) / steps


def _equal(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def pipe_label(pipe: dict) -> str:
    """``id d=depth learner`` of a transfer pipeline, or the name of a learner on a descriptor."""
    if "name" in pipe:
        return pipe["name"]
    return f"{pipe['model_id']} d={pipe['depth']} {pipe['learner']}"


def _mean_prediction(pipes: list[dict], pair: int) -> np.ndarray:
    return np.mean([p["preds"][pair] for p in pipes], axis=0)


# The methods a task chooses among, in the order that breaks a tie (the simpler first).
SELECTABLE = ("baseline", "transfer", "stack", "properties", "blend")
# The methods a blend averages, those of them that a task has.
BLENDED = ("baseline", "stack", "properties")


@dataclass
class Pick:
    """A method's choice in one task: its pipelines (the prediction is their mean, or their
    weighted mean for a blend), their inner-CV MAE, and the MAE of the method's choosing
    cross-validated over the inner folds (:meth:`Screen.choice_mae`), by which methods are
    compared."""

    method: str
    pipes: list[dict]
    mae: float
    choice_mae: float
    weights: list[float] | None = None  # per pipeline, summing to 1 (None: equal)
    fold_mae: list[float] | None = None  # the inner-CV MAE on each inner fold
    parts: dict[str, float] | None = None  # a blend's methods and their weights

    def predict(self, pair: int) -> np.ndarray:
        return np.average([p["preds"][pair] for p in self.pipes], axis=0, weights=self.weights)

    @property
    def members(self) -> list[str]:
        """What was chosen: ``id d=depth learner`` of each transferred model, or a baseline."""
        return [pipe_label(p) for p in self.pipes]

    @property
    def weighting(self) -> str | None:
        """A blend's methods with their weights ("baseline 0.83, stack 0.17") when these are
        not equal."""
        w = list((self.parts or {}).values())
        if not w or np.allclose(w, w[0]):
            return None
        return ", ".join(f"{m} {v:.2f}" for m, v in self.parts.items())

    @property
    def blend_name(self) -> str:
        """A blend's name: "mean of baseline, stack", "mean of baseline 0.83, stack 0.17", or
        "stack alone (the others weighted 0)" when its weights keep one method."""
        if len(self.parts) == 1:
            return f"{next(iter(self.parts))} alone (the others weighted 0)"
        return "mean of " + (self.weighting or ", ".join(self.parts))

    @property
    def label(self) -> str:
        """The members joined by " + ", a weighted blend's preceded by its weighting."""
        members = " + ".join(self.members)
        return members if self.weighting is None else f"{self.weighting}: {members}"


@dataclass
class Picks:
    """A task's picks: each method's choice, in ``SELECTABLE`` order, and when two methods of
    ``BLENDED`` are there the blend of their choices with equal weights and with the weights
    of :func:`blend_weights` (the same pick where these are equal)."""

    methods: list[Pick]
    equal: Pick | None = None
    fitted: Pick | None = None

    def blend(self, rule: str) -> Pick | None:
        """The blend of a ``--select`` rule: weights fitted with "blend", else equal ones."""
        return self.fitted if rule == "blend" else self.equal


def method_picks(
    screen: Screen,
    base: Screen,
    k_stack: int,
    t: int,
    props: Screen | None = None,
    fit_from: int = FIT_WEIGHTS_FROM,
) -> Picks:
    """Each method's choice in task ``t``: the best baseline, the best transfer pipeline, when
    ``k_stack`` > 1 and two distinct models are scored the mean of the top ``k_stack``, with
    ``props`` (learners on the source models' predictions) its best; and the blends of the
    choices of the methods of ``BLENDED`` there are (at least two), each method's pipelines
    sharing its weight, the methods of weight 0 left out (``fit_from``: :func:`blend_weights`)."""
    inner = screen.plan.tasks[t].inner

    def scored(pick: Pick) -> Pick:  # its inner-CV MAE, overall and per inner fold
        errors = [np.abs(pick.predict(p) - screen.y[screen.plan.pairs[p][1]]) for p in inner]
        pick.mae = float(np.concatenate(errors).mean())
        pick.fold_mae = [float(e.mean()) for e in errors]
        return pick

    by_method = {
        "baseline": (base, 1),
        "transfer": (screen, 1),
        "stack": (screen, k_stack),
        "properties": (props, 1),
    }
    picks = Picks([])
    for method in SELECTABLE[:-1]:
        s, k = by_method[method]
        if s is None:
            continue
        chosen = s.chosen(t, k)
        if not chosen or (method == "stack" and (k <= 1 or len(chosen) < 2)):
            continue
        pipes = [s.pipes[i] for i in chosen]
        picks.methods.append(scored(Pick(method, pipes, 0.0, s.choice_mae(t, k))))
    parts = [p for p in picks.methods if p.method in BLENDED]
    if len(parts) < 2:
        return picks
    y, oof, fold = out_of_fold_choices([by_method[p.method] for p in parts], t)

    def blend(w: np.ndarray) -> Pick:
        kept = [i for i in range(len(parts)) if w[i] > 0]
        return scored(
            Pick(
                "blend",
                [pipe for i in kept for pipe in parts[i].pipes],
                0.0,
                oof_mae(y, oof, w),
                weights=[w[i] / len(parts[i].pipes) for i in kept for _ in parts[i].pipes],
                parts={parts[i].method: float(w[i]) for i in kept},
            )
        )

    equal = _equal(len(parts))
    w = blend_weights(y, oof, fold, fit_from)
    picks.equal = blend(equal)
    picks.fitted = picks.equal if np.array_equal(w, equal) else blend(w)
    return picks


# How the saved method is picked (``--select``): the blend, its weights fitted out of fold
# from ``--fit-weights-from`` rows (the baseline when it wins every inner fold); the same with
# equal weights; or the method whose choosing does best cross-validated.
SELECT_RULES = ("blend", "equal", "cv")


def select_method(picks: Picks, rule: str = "blend") -> Pick:
    """The method picked among a task's ``picks`` by a rule of ``SELECT_RULES``: with "blend"
    and "equal", the rule's blend (:meth:`Picks.blend`; the one method it keeps when the others
    have weight 0) when the task has one, unless the baseline's choice has the lower MAE on
    every inner fold (then the baseline: with hundreds of rows a from-scratch learner can be
    clearly better than the methods it is averaged with); otherwise (and with "cv") the least
    MAE of its choosing, cross-validated over the task's inner folds, among the methods and
    the equal blend (a tie goes to the earlier of ``SELECTABLE``)."""
    blend = picks.blend(rule)
    if rule == "cv" or blend is None:
        options = picks.methods + ([picks.equal] if picks.equal is not None else [])
        return min(options, key=lambda p: p.choice_mae)
    if len(blend.parts) == 1:
        blend = next(p for p in picks.methods if p.method in blend.parts)
    base = next((p for p in picks.methods if p.method == "baseline"), None)
    if base is not None and all(b < m for b, m in zip(base.fold_mae, blend.fold_mae)):
        return base
    return blend


def _tasks(plan: Plan, prefix: str) -> list[int]:
    return [i for i, t in enumerate(plan.tasks) if t.name.startswith(prefix)]


def nested_estimate(
    screen: Screen,
    base: Screen,
    k_stack: int,
    props: Screen | None = None,
    rule: str = "blend",
    fit_from: int = FIT_WEIGHTS_FROM,
) -> dict:
    """The nested estimate of transfer (and of the stack of its top ``k_stack``, when > 1, and
    of the learners on the source models' predictions, ``props``, when given) and of the
    baseline, each choosing inside every outer training fold; of the blend of ``rule``; under
    ``rules``, of the whole procedure with each rule of ``SELECT_RULES``: the method picked by
    :func:`select_method` inside every outer training fold, scored on its test fold; and under
    ``selected``, that of ``rule``."""
    plan, y = screen.plan, screen.y
    outer_ids = _tasks(plan, "nested/")
    r, p, chosen = screen.selected_predictions(outer_ids)
    rb, pb, chosen_b = base.selected_predictions(outer_ids)
    nested = {
        **cv_metrics(y, r, p),
        "chosen": [c[0]["model_id"] for c in chosen],
        "chosen_pipelines": [pipe_label(c[0]) for c in chosen],
        "baseline": {**cv_metrics(y, rb, pb), "chosen": [c[0]["name"] for c in chosen_b]},
        "outer_folds": len(outer_ids),
        "inner_folds": len(plan.tasks[outer_ids[0]].inner),
    }
    if k_stack > 1:
        rs, ps, _ = screen.selected_predictions(outer_ids, k_stack)
        nested["stack"] = cv_metrics(y, rs, ps)
    if props is not None:
        rp, pp, chosen_p = props.selected_predictions(outer_ids)
        nested["properties"] = {**cv_metrics(y, rp, pp), "chosen": [c[0]["name"] for c in chosen_p]}
    per_task = [method_picks(screen, base, k_stack, t, props, fit_from) for t in outer_ids]
    blend = _nested_blend(screen, [ps.blend(rule) for ps in per_task])
    if blend is not None:
        nested["blend"] = blend
    nested["rules"] = [
        {"rule": r, **_nested_picks(screen, [select_method(ps, r) for ps in per_task])}
        for r in SELECT_RULES
    ]
    nested["selected"] = next(x for x in nested["rules"] if x["rule"] == rule)
    return nested


def _nested_picks(screen: Screen, picks: list[Pick]) -> dict:
    """The picks made in the outer training folds, scored on their test folds."""
    plan = screen.plan
    test = [plan.tasks[t].test_pair for t in _tasks(plan, "nested/")]
    return {
        **cv_metrics(
            screen.y,
            np.concatenate([plan.pairs[p][1] for p in test]),
            np.concatenate([pick.predict(p) for pick, p in zip(picks, test)]),
        ),
        "chosen": [pick.method for pick in picks],
        "chosen_pipelines": [pick.label for pick in picks],
    }


def nested_blend(
    screen: Screen,
    base: Screen,
    k_stack: int,
    props: Screen | None,
    rule: str = "blend",
    fit_from: int = FIT_WEIGHTS_FROM,
) -> dict | None:
    """The nested estimate of the blend of ``rule`` alone (None when one of its parts is off):
    for the control networks, whose blend is the fair control of the pretrained one."""
    outer_ids = _tasks(screen.plan, "nested/")
    return _nested_blend(
        screen,
        [method_picks(screen, base, k_stack, t, props, fit_from).blend(rule) for t in outer_ids],
    )


def _nested_blend(screen: Screen, blends: list[Pick | None]) -> dict | None:
    """The blends chosen in the outer training folds on their test folds (None without)."""
    if any(b is None for b in blends):
        return None
    scores = _nested_picks(screen, blends)
    return {k: scores[k] for k in ("cv_mae", "cv_rmse", "cv_r2")}


def learning_curve(screen: Screen, base: Screen) -> list[dict]:
    """Rows ``{n, method, mae, rmse, r2}``: the nested selection (cheap learners) on each
    curve size's subsamples of the outer training folds, and on all their rows."""
    plan, y = screen.plan, screen.y
    outer_ids = _tasks(plan, "nested/")
    sizes = sorted({plan.tasks[i].n for i in _tasks(plan, "curve/")})
    n_all = int(round(np.mean([len(plan.tasks[i].train) for i in outer_ids])))
    rows = []
    for n in sizes + [n_all]:
        point = outer_ids if n == n_all else _tasks(plan, f"curve/{n}/")
        for method, s in (("transfer", screen), ("baseline", base)):
            rr, pp, _ = s.selected_predictions(point, learners=CURVE_LEARNERS[method])
            m = cv_metrics(y, rr, pp)
            rows.append(
                {
                    "n": n,
                    "method": method,
                    "mae": m["cv_mae"],
                    "rmse": m["cv_rmse"],
                    "r2": m["cv_r2"],
                }
            )
    return rows


def nested_selection(screen: Screen, k: int = 1) -> dict:
    """The nested estimate of one screen's selection alone (the mean of its top ``k`` when
    k > 1), e.g. of the control networks: ``{"cv_mae", "cv_rmse", "cv_r2", "chosen"}``."""
    r, p, chosen = screen.selected_predictions(_tasks(screen.plan, "nested/"), k)
    return {
        **cv_metrics(screen.y, r, p),
        "chosen": [pipe_label(c[0]) for c in chosen],
    }
