"""Reports as blocks, rendered to Markdown and to a self-contained HTML page.

A report is a list of blocks: ``("h", level, text)``, ``("p", text)``, ``("ul", items)``,
``("table", header, rows)``, ``("img", file, alt)``. :func:`render_markdown` and
:func:`render_html` render the same blocks, so both say the same thing; the HTML embeds the PNGs
as base64 and needs no other file. The transfer report and the library report are written so.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path


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


def some(items: list[str], n: int = 5) -> str:
    """The first ``n`` of ``items``, comma-separated, with "..." when there are more."""
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


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


# Wide tables scroll inside their own box and long names wrap: the page never scrolls sideways.
STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
.table{overflow-x:auto;margin:.5em 0 1em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;font-size:.9em;
overflow-wrap:anywhere}th{background:#f0f0f0}img{max-width:100%;height:auto}"""


def render_html(blocks: list[tuple], folder: Path) -> str:
    e = html.escape
    title = next((blk[2] for blk in blocks if blk[0] == "h"), "report")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
    ]
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
            body = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in blk[2]
            )
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            parts.append(f'<div class="table">{table}</div>')
        elif kind == "img":
            data = base64.b64encode((folder / blk[1]).read_bytes()).decode("ascii")
            parts.append(f'<p><img alt="{e(blk[2])}" src="data:image/png;base64,{data}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_pages(folder: Path, blocks: list[tuple], name: str = "report") -> list[Path]:
    """``<name>.md`` and ``<name>.html`` of ``blocks`` in ``folder`` (images relative to it)."""
    md, page = folder / f"{name}.md", folder / f"{name}.html"
    md.write_text(render_markdown(blocks), encoding="utf-8")
    page.write_text(render_html(blocks, folder), encoding="utf-8")
    return [md, page]
