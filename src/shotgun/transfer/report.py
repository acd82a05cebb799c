"""Readable report of a transfer out folder: ``report.md`` and a self-contained ``report.html``.

Both are rendered from one list of blocks (:mod:`shotgun.markup`), so they say the same thing;
the HTML embeds the PNGs as base64 and needs no other file. Every optional part
of ``summary.json`` (nested estimate, methods, baselines, learning curve, plots) may be missing;
the summary is read through :class:`shotgun.transfer.summary.TransferSummary`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..markup import fmt, some, write_pages
from .summary import TransferSummary

METRICS = ("cv_mae", "cv_rmse", "cv_r2")
HEADER = ["estimate", "CV MAE", "CV RMSE", "CV R2"]
TOP = 10

CAVEAT = (
    "The same-fold best transfer candidate is selected on the very folds that score it, out of "
    "many (candidate, depth, learner) combinations: its error is selection-optimistic. The "
    "nested estimate (the selection repeated inside each outer training fold, scored on the "
    "outer test fold) is the one to compare with the baseline and with published figures such "
    "as Matbench's."
)


def _metric_row(label: str, d) -> list:
    return [label] + [fmt(getattr(d, k, None)) for k in METRICS]


def _setup(s: TransferSummary) -> list[str]:
    t = s.target
    lines = [
        f"data: {t.data} (input column {t.input}, material class {t.kind})",
        f"samples: {fmt(s.n_samples)} used, {fmt(s.n_dropped)} dropped "
        "(listed in dropped.csv with the reason: input not featurizable as the material "
        "class, target missing or not numeric)",
        f"cross-validation: {fmt(s.folds)} folds, repeats {fmt(s.repeats)}, "
        f"split {s.split}, seed {fmt(s.seed)}",
        f"candidates: {fmt(s.n_candidates)} library models"
        + first_pass_text(s.first_pass)
        + (
            f" ({s.n_weak_excluded} weak models left out: test R² below zero)"
            if s.n_weak_excluded
            else ""
        )
        + "; learners: "
        + ", ".join(map(str, s.learners or ["-"])),
        leakage_line(s),
    ]
    if s.not_finite:
        lines.append(
            f"left out: {len(s.not_finite)} candidates whose features on the target's inputs "
            f"are not finite (NaN or infinite): {some(s.not_finite)}"
        )
    return lines + [
        f"library: {s.library or '-'} (version {s.library_version or '-'})",
        f"run time: {fmt(s.seconds)} s",
    ]


def first_pass_text(p) -> str:
    """What the first pass kept, when it left candidates out."""
    if p is None or p.n_kept == p.n_applicable:
        return ""
    return (
        f" of {fmt(p.n_applicable)} applicable in {fmt(p.n_cells)} cells (first pass, "
        f"--max-models {p.max_models}: the best of each cell by source test R², in turns; "
        f"{fmt(p.n_cells_kept)} cells kept)"
    )


def leakage_line(s: TransferSummary) -> str:
    """What the leakage guard found: the shares of the target's inputs the sources saw."""
    g = s.leakage
    if g is None:
        return "training-set overlap with the target: not checked"
    if g.max_share is None:
        return (
            "training-set overlap with the target: unknown (the library does not record its "
            "models' training inputs)"
        )
    if g.max_share == 0 and not g.n_unknown:
        return (
            "training-set overlap with the target: none (no target input is among those the "
            "candidates' source models were fitted on)"
        )
    text = (
        f"training-set overlap with the target: the candidates' source models were trained on "
        f"up to {g.max_share:.1%} of the target's inputs; "
        f"{g.n_excluded} above {g.max_overlap:.1%} left out"
    )
    if g.excluded:
        text += f" ({some(g.excluded)})"
    if g.n_unknown:
        text += f"; {g.n_unknown} of unknown overlap (trained before inputs were recorded)"
    if g.n_unscored:
        text += (
            f"; the {g.n_unscored} target rows the kept ones saw are used for fitting only, "
            "never scored"
        )
    return text


def _nested(s: TransferSummary) -> list[tuple]:
    nested = s.nested
    if nested is None:
        return [
            ("h", 2, "Nested estimate"),
            (
                "p",
                "Nested cross-validation was off for this run: only the selection-optimistic "
                "same-fold estimate below is available. Do not read a gain over the baseline "
                "from it.",
            ),
        ]
    nb = nested.baseline
    text = f"{fmt(nested.outer_folds)} outer folds, {fmt(nested.inner_folds)} inner folds."
    if nested.cv_mae is not None and nb is not None and nb.cv_mae:
        gain = 1.0 - nested.cv_mae / nb.cv_mae
        text += (
            f" Transfer's nested MAE is {abs(gain):.1%} "
            f"{'below' if gain >= 0 else 'above'} the nested baseline's."
        )
    sel = nested.selected
    if sel is not None:
        text += (
            " The selected method (transfer, stack, properties, blend or baseline, picked "
            "inside each outer training fold by the rule that picks the saved model) estimates "
            "what the saved model will do on new data."
        )
        if sel.rule is not None:
            text += f" It was picked with --select {sel.rule}."
    rows = [_metric_row("transfer (nested)", nested), _metric_row("baseline (nested)", nb)]
    if nested.stack is not None:
        rows.append(_metric_row("stack (nested)", nested.stack))
    if nested.properties is not None:
        rows.append(_metric_row("properties as features (nested)", nested.properties))
    if nested.blend is not None:
        rows.append(_metric_row("blend of baseline, stack and properties (nested)", nested.blend))
    if sel is not None:
        rows.append(_metric_row("selected method (nested)", sel))
    for other in nested.rules or []:  # what the other rules of --select would have given
        if sel is not None and other.rule != sel.rule:
            rows.append(_metric_row(f"with --select {other.rule} (nested)", other))
    b = [("h", 2, "Nested estimate (compare this one)"), ("p", text), ("table", HEADER, rows)]
    columns = {
        "transfer": nested.chosen_pipelines or nested.chosen,
        "baseline": nb.chosen if nb is not None else [],
        "properties": nested.properties.chosen if nested.properties is not None else [],
        "selected method": [
            f"{m}: {p}" for m, p in zip(sel.chosen, sel.chosen_pipelines or sel.chosen)
        ]
        if sel is not None
        else [],
    }
    columns = {k: v for k, v in columns.items() if v}
    if columns.get("transfer"):
        n = len(columns["transfer"])
        rows = [
            [str(i + 1)] + [str(v[i]) if i < len(v) else "-" for v in columns.values()]
            for i in range(n)
        ]
        b += [
            ("p", "Chosen in each outer fold:"),
            ("table", ["outer fold", *columns], rows),
        ]
    return b


def control_sentence(s: TransferSummary) -> str:
    """Whether pretrained features beat random ones on this target, with the numbers."""
    c = s.control
    if c is None:
        return (
            "No control networks were screened in this run (--no-control): a gain over the "
            "baseline cannot be credited to pretraining rather than to a random projection of "
            "the descriptors."
        )
    nested = c.estimate == "nested" and s.nested is not None
    p = s.nested if nested else s.best
    verdict = "beat" if c.pretrained_better else "did not beat"
    text = (
        f"Pretrained features {verdict} random ones on this target: "
        f"{'nested' if nested else 'same-fold'} MAE {fmt(p.cv_mae)} against {fmt(c.cv_mae)} "
        f"for the control networks ({fmt(c.n_networks)} networks of the candidates' "
        f"architectures with random weights), R² {fmt(p.cv_r2)} against {fmt(c.cv_r2)}"
    )
    if nested and c.stack is not None and s.nested.stack is not None:
        k = s.stack.k if s.stack is not None else "K"
        text += f"; stacks of the top {k}: {fmt(s.nested.stack.cv_mae)} against "
        text += fmt(c.stack.cv_mae)
    if nested and c.properties is not None and s.nested.properties is not None:
        text += (
            "; properties as features (the networks' predictions as descriptors): "
            f"{fmt(s.nested.properties.cv_mae)} against {fmt(c.properties.cv_mae)}"
        )
    if nested and c.blend is not None and s.nested.blend is not None:
        text += (
            "; the blend (with the same baseline): "
            f"{fmt(s.nested.blend.cv_mae)} against {fmt(c.blend.cv_mae)}"
        )
    text += "." if nested else " (both selection-optimistic)."
    r = c.relatedness
    if r is not None:
        verdict = "a source" if r.r2 > r.control_r2 else "no source"
        text += (
            f" The prediction closest to the target is that of {r.source} ({r.model_id}), "
            f"squared correlation {fmt(r.r2)} over all rows, against {fmt(r.control_r2)} for the "
            f"closest control network: the library holds {verdict} more related to this target "
            "than a random network of the same descriptors (a diagnostic that sees every target "
            "value, not used to choose)."
        )
    return text


def _control(s: TransferSummary) -> list[tuple]:
    b = [("h", 2, "Control: random weights"), ("p", control_sentence(s))]
    c = s.control
    if c is None:
        return b
    rows = [_metric_row(f"control ({c.estimate})", c)]
    if c.stack is not None:
        rows.append(_metric_row("control stack (nested)", c.stack))
    if c.properties is not None:
        rows.append(_metric_row("control properties as features (nested)", c.properties))
    if c.blend is not None:
        rows.append(_metric_row("control blend (nested)", c.blend))
    if c.best is not None and c.estimate == "nested":
        rows.append(_metric_row(f"best control (same folds): {c.best.name}", c.best))
    return b + [("table", HEADER, rows)]


def _same_folds(s: TransferSummary) -> list[tuple]:
    best, base = s.best, s.baseline
    b = [
        ("h", 2, "Same-fold estimates (optimistic for the best candidate)"),
        (
            "table",
            HEADER,
            [
                _metric_row(
                    f"best transfer: {best.dataset}/{best.property} ({best.model_id}, "
                    f"{best.descriptor}, depth {fmt(best.depth)}, {best.learner})",
                    best,
                ),
                _metric_row(f"best baseline: {base.name}", base),
            ],
        ),
    ]
    if s.methods:
        rows = [
            [m.method, m.name + (" (winner)" if s.winner in (m.name, m.method) else "")]
            + [fmt(getattr(m, k)) for k in METRICS]
            + [fmt(m.choice_mae) if m.choice_mae is not None else "-"]
            for m in s.methods
        ]
        b += [
            ("h", 2, "Methods (same folds)"),
            (
                "p",
                "The winner is the method whose choosing does best cross-validated: chosen "
                "without each fold, scored on it (the last column). A method that chooses among "
                "hundreds of pipelines has the lowest CV MAE of its own best more often than "
                "its choosing deserves.",
            ),
            ("table", ["method", "name", "CV MAE", "CV RMSE", "CV R2", "choosing, CV MAE"], rows),
        ]
        if s.saved is not None:
            b.append(
                (
                    "p",
                    f"Winner, refitted on all rows and saved under {s.model}/ "
                    f"(shotgun predict --model): {s.saved.method}, {s.saved.name} "
                    f"({', '.join(s.saved.members)})."
                    + (
                        " Fine-tuning is not scored inside the outer folds, so it is reported "
                        "and never picked."
                        if s.fine_tune
                        else ""
                    ),
                )
            )
        elif s.winner is not None:
            b.append(("p", f"Winner: {s.winner}."))
    if s.baselines:
        b += [
            ("h", 2, "From-scratch baselines (same folds)"),
            ("table", HEADER, [_metric_row(x.name, x) for x in s.baselines]),
        ]
    return b


def _tables(out: Path) -> list[tuple]:
    """The top of ranking.csv and the learning curve, from the files beside the summary."""
    b: list[tuple] = []
    ranking_path = out / "ranking.csv"
    if ranking_path.is_file():
        r = pd.read_csv(ranking_path).sort_values("cv_mae", kind="stable").head(TOP)
        cols = [
            c
            for c in (
                "model_id",
                "dataset",
                "property",
                "material_class",
                "descriptor",
                "architecture",
                "learner",
                "depth",
                "train_overlap",
                *METRICS,
            )
            if c in r.columns
        ]
        b += [
            ("h", 2, f"Top {len(r)} candidates (same folds)"),
            (
                "table",
                ["rank", *cols],
                [
                    [str(i + 1)] + [fmt(v.item() if hasattr(v, "item") else v) for v in row]
                    for i, row in enumerate(r[cols].itertuples(index=False))
                ],
            ),
        ]
    curve_path = out / "learning_curve.csv"
    curve = pd.read_csv(curve_path) if curve_path.is_file() else None
    if curve is not None and curve.empty:
        b += [
            ("h", 2, "Learning curve"),
            ("p", "No learning curve: it is computed with the nested estimate, which was off."),
        ]
    elif curve is not None or (out / "learning_curve.png").is_file():
        b.append(("h", 2, "Learning curve"))
        if curve is not None:
            mae = curve.pivot_table(index="n", columns="method", values="mae", aggfunc="mean")
            b += [
                (
                    "p",
                    "MAE on the outer test folds, the model chosen inside each outer training "
                    "fold subsampled to n rows.",
                ),
                (
                    "table",
                    ["n training samples", *[f"MAE {m}" for m in mae.columns]],
                    [
                        [str(int(n))] + [fmt(float(v)) for v in row]
                        for n, row in zip(mae.index, mae.to_numpy())
                    ],
                ),
            ]
        if (out / "learning_curve.png").is_file():
            b.append(("img", "learning_curve.png", "learning curve: MAE against training size"))
    if (out / "parity.png").is_file():
        b += [
            ("h", 2, "Parity plot"),
            (
                "p",
                "Cross-validated predictions of the best transfer candidate and the best "
                "baseline against the measured values.",
            ),
            ("img", "parity.png", "parity plot"),
        ]
    return b


def _blocks(out: Path, s: TransferSummary) -> list[tuple]:
    """The report as blocks: ("h", level, text), ("p", text), ("ul", items),
    ("table", header, rows), ("img", file, alt)."""
    unit = s.target.unit
    b: list[tuple] = [
        ("h", 1, f"Transfer report: {s.target.target}" + (f" [{unit}]" if unit else ""))
    ]
    b += [("h", 2, "Setup"), ("ul", _setup(s))]
    b += [("h", 2, "How to read these numbers"), ("p", CAVEAT)]
    b += _nested(s) + _control(s) + _same_folds(s) + _tables(out)
    if s.note:
        b += [("h", 2, "Note"), ("p", str(s.note))]
    return b


def write_report(out: Path) -> list[Path]:
    """Write ``report.md`` and ``report.html`` for the transfer out folder ``out``."""
    out = Path(out)
    return write_pages(out, _blocks(out, TransferSummary.read(out / "summary.json")))
