"""Readable report of a transfer out folder: ``report.md`` and a self-contained ``report.html``.

Both are rendered from one list of blocks (heading, paragraph, list, table, image), so they say
the same thing; the HTML embeds the PNGs as base64 and needs no other file. Every optional part
of ``summary.json`` (nested estimate, methods, baselines, learning curve, plots) may be missing.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

METRICS = ("cv_mae", "cv_rmse", "cv_r2")
TOP = 10

CAVEAT = (
    "The same-fold best transfer candidate is selected on the very folds that score it, out of "
    "many (candidate, depth, learner) combinations: its error is selection-optimistic. The "
    "nested estimate (the selection repeated inside each outer training fold, scored on the "
    "outer test fold) is the one to compare with the baseline and with published figures such "
    "as Matbench's."
)


def fmt(x) -> str:
    """Numbers as 4 significant digits, everything else as text; missing values as a dash."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _metric_row(label: str, d: dict | None) -> list:
    d = d or {}
    return [label] + [fmt(d.get(k)) for k in METRICS]


def _blocks(out: Path, s: dict) -> list[tuple]:
    """The report as blocks: ("h", level, text), ("p", text), ("ul", items),
    ("table", header, rows), ("img", file, alt)."""
    t = s.get("target") or {}
    unit = t.get("unit")
    name = t.get("target", out.name)
    b: list[tuple] = [("h", 1, f"Transfer report: {name}" + (f" [{unit}]" if unit else ""))]

    setup = [
        f"data: {t.get('data', '-')} (input column {t.get('input', '-')}, "
        f"material class {t.get('kind', '-')})",
        f"samples: {fmt(s.get('n_samples'))} used, {fmt(s.get('n_dropped'))} dropped "
        "(input not featurizable or target missing)",
        f"cross-validation: {fmt(s.get('folds'))} folds, repeats {fmt(s.get('repeats', 1))}, "
        f"split {s.get('split', 'random')}, seed {fmt(s.get('seed'))}",
        f"candidates: {fmt(s.get('n_candidates'))} library models; learners: "
        + ", ".join(map(str, s.get("learners") or ["-"])),
        f"library: {s.get('library', '-')} (version {s.get('library_version', '-')})",
        f"run time: {fmt(s.get('seconds'))} s",
    ]
    b += [("h", 2, "Setup"), ("ul", setup)]

    b += [("h", 2, "How to read these numbers"), ("p", CAVEAT)]
    nested = s.get("nested")
    header = ["estimate", "CV MAE", "CV RMSE", "CV R2"]
    if nested:
        nb = nested.get("baseline") or {}
        text = (f"{fmt(nested.get('outer_folds'))} outer folds, "
                f"{fmt(nested.get('inner_folds'))} inner folds.")
        if nested.get("cv_mae") is not None and nb.get("cv_mae"):
            gain = 1.0 - nested["cv_mae"] / nb["cv_mae"]
            text += (f" Transfer's nested MAE is {abs(gain):.1%} "
                     f"{'below' if gain >= 0 else 'above'} the nested baseline's.")
        b += [("h", 2, "Nested estimate (compare this one)"), ("p", text),
              ("table", header, [_metric_row("transfer (nested)", nested),
                                 _metric_row("baseline (nested)", nb)]
               + ([_metric_row("stack (nested)", nested["stack"])] if nested.get("stack") else []))]
        chosen = nested.get("chosen_pipelines") or nested.get("chosen") or []
        base_chosen = nb.get("chosen") or []
        if chosen:
            rows = [[str(i + 1), str(c), str(base_chosen[i]) if i < len(base_chosen) else "-"]
                    for i, c in enumerate(chosen)]
            b += [("p", "Chosen in each outer fold:"),
                  ("table", ["outer fold", "transfer", "baseline"], rows)]
    else:
        b += [("h", 2, "Nested estimate"),
              ("p", "Nested cross-validation was off for this run: only the selection-optimistic "
                    "same-fold estimate below is available. Do not read a gain over the baseline "
                    "from it.")]

    best, base = s.get("best") or {}, s.get("baseline") or {}
    b += [("h", 2, "Same-fold estimates (optimistic for the best candidate)"),
          ("table", header, [
              _metric_row(f"best transfer: {best.get('dataset', '-')}/{best.get('property', '-')} "
                          f"({best.get('model_id', '-')}, {best.get('descriptor', '-')}, "
                          f"depth {fmt(best.get('depth'))}, {best.get('learner', '-')})", best),
              _metric_row(f"best baseline: {base.get('name', '-')}", base)])]

    methods = s.get("methods") or []
    if methods:
        winner = s.get("winner")
        if isinstance(winner, dict):
            winner = winner.get("name") or winner.get("method")
        rows = [[m.get("method", "-"), str(m.get("name", "-"))
                 + (" (winner)" if winner is not None and winner in (m.get("name"), m.get("method"))
                    else "")] + [fmt(m.get(k)) for k in METRICS] for m in methods]
        b += [("h", 2, "Methods (same folds)"),
              ("table", ["method", "name", "CV MAE", "CV RMSE", "CV R2"], rows)]
        if winner is not None:
            b.append(("p", f"Winner: {winner}."))

    baselines = s.get("baselines") or []
    if baselines:
        b += [("h", 2, "From-scratch baselines (same folds)"),
              ("table", header, [_metric_row(x.get("name", "-"), x) for x in baselines])]

    ranking_path = out / "ranking.csv"
    if ranking_path.is_file():
        r = pd.read_csv(ranking_path).sort_values("cv_mae", kind="stable").head(TOP)
        cols = [c for c in ("model_id", "dataset", "property", "material_class", "descriptor",
                            "architecture", "learner", "depth", *METRICS) if c in r.columns]
        b += [("h", 2, f"Top {len(r)} candidates (same folds)"),
              ("table", ["rank", *cols],
               [[str(i + 1)] + [fmt(v.item() if hasattr(v, "item") else v) for v in row]
                for i, row in enumerate(r[cols].itertuples(index=False))])]

    curve_path = out / "learning_curve.csv"
    curve = pd.read_csv(curve_path) if curve_path.is_file() else None
    if curve is not None and curve.empty:
        b += [("h", 2, "Learning curve"),
              ("p", "No learning curve: it is computed with the nested estimate, which was off.")]
    elif curve is not None or (out / "learning_curve.png").is_file():
        b.append(("h", 2, "Learning curve"))
        if curve is not None:
            mae = curve.pivot_table(index="n", columns="method", values="mae", aggfunc="mean")
            b += [("p", "MAE on the outer test folds, the model chosen inside each outer training "
                        "fold subsampled to n rows."),
                  ("table", ["n training samples", *[f"MAE {m}" for m in mae.columns]],
                   [[str(int(n))] + [fmt(float(v)) for v in row]
                    for n, row in zip(mae.index, mae.to_numpy())])]
        if (out / "learning_curve.png").is_file():
            b.append(("img", "learning_curve.png", "learning curve: MAE against training size"))

    if (out / "parity.png").is_file():
        b += [("h", 2, "Parity plot"),
              ("p", "Cross-validated predictions of the best transfer candidate and the best "
                    "baseline against the measured values."),
              ("img", "parity.png", "parity plot")]
    if s.get("note"):
        b += [("h", 2, "Note"), ("p", str(s["note"]))]
    return b


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            lines += ["#" * blk[1] + " " + blk[2], ""]
        elif kind == "p":
            lines += [blk[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in blk[1]] + [""]
        elif kind == "table":
            header, rows = blk[1], blk[2]
            lines.append("| " + " | ".join(map(_md_cell, header)) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{blk[2]}]({blk[1]})", ""]
    return "\n".join(lines)


STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;font-size:.9em}th{background:#f0f0f0}img{max-width:100%}"""


def render_html(blocks: list[tuple], folder: Path) -> str:
    e = html.escape
    title = next((blk[2] for blk in blocks if blk[0] == "h"), "report")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"]
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            parts.append(f"<h{blk[1]}>{e(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            parts.append(f"<p>{e(blk[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in blk[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for row in blk[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((folder / blk[1]).read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="{e(blk[2])}" src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out: Path) -> list[Path]:
    """Write ``report.md`` and ``report.html`` for the transfer out folder ``out``."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    blocks = _blocks(out, summary)
    md, page = out / "report.md", out / "report.html"
    md.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, out), encoding="utf-8")
    return [md, page]
