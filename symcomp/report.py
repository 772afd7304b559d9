"""What ``analyze`` and ``verify`` hand on: their JSON (the schema is documented in
``docs/cli.md``) and ``analyze --report FILE``, a Markdown or HTML page with the breakdown and
two SVG plots drawn by matplotlib (the optional extra ``symcomp[report]``): the redundancy per
group and per layer.

The same analysis gives the same bytes: the SVGs carry no date and a fixed hash salt, and the
page no timestamp.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

from symcomp.errors import SymcompError

if TYPE_CHECKING:
    from symcomp.symmetry.analysis import Analysis, GroupLine
    from symcomp.verify.report import VerifyReport
    from symcomp.verify.witness import Witness

JSON_VERSION = 2
"""Bumped when a key of the JSON changes meaning or goes away (2: actions in the spec language,
sizes, shares, per-layer dimensions, witness verdicts)."""


def share(dimension: int, parameters: int) -> float:
    """``dimension`` as a percentage of ``parameters``."""
    return 100.0 * dimension / parameters if parameters else 0.0


def percent(value: float) -> str:
    """A share for people: two significant digits below 1 %, one decimal above."""
    if value == 0:
        return "0%"
    if abs(value) < 0.001:
        return "<0.001%" if value > 0 else ">-0.001%"
    if abs(value) < 1:
        return f"{value:.2g}%"
    return f"{value:.1f}%"


def folded(analysis: Analysis) -> tuple[list[GroupLine], list[GroupLine]]:
    """(the lines with a dimension, the zero-dimensional ones: discrete groups)."""
    kept = [g for g in analysis.groups if g.dimension != 0]
    return kept, [g for g in analysis.groups if g.dimension == 0]


def folded_line(zero: list[GroupLine]) -> str:
    names = ", ".join(g.name for g in zero)
    return f"{len(zero)} groups of dimension 0 folded away (discrete, nothing redundant): {names}"


# --- JSON ------------------------------------------------------------------------------------


def witness_json(w: Witness) -> dict:
    return {
        "instance": dict(w.instance),
        "parameters": w.parameters,
        "derived": w.derived,
        "measured": w.measured,
        "verdict": w.verdict,
        "ok": w.ok,
        "gap": w.gap,
        "trustworthy": w.trustworthy,
        "auto": w.auto,
        "pattern": w.pattern,
        "outside": w.outside,
        "uncovered": dict(w.uncovered),
        "not_null": list(w.not_null),
    }


def analysis_json(a: Analysis) -> dict:
    """``analyze --json``: see ``docs/cli.md`` for each key."""
    return {
        "version": JSON_VERSION,
        "name": a.name,
        "sizes": dict(a.sizes),
        "parameters": a.parameters,
        "redundant": a.redundant,
        "redundant_percent": share(a.redundant, a.parameters),
        "reduced_parameters": a.reduced_parameters,
        "formula": a.formula,
        "groups": [
            {
                "name": g.name,
                "catalogue_id": g.catalogue_id,
                "acts_on": g.acts_on,
                "per": g.per,
                "dimension_each": g.dimension_each,
                "units": g.units,
                "formula": g.formula,
                "dimension": g.dimension,
                "percent": share(g.dimension, a.parameters),
                "action": dict(g.action),
                "per_layer": {str(layer): n for layer, n in g.per_layer},
            }
            for g in a.groups
        ],
        "measured": [witness_json(w) for w in a.measured],
        "confirmed": a.confirmed,
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def verify_json(r: VerifyReport) -> dict:
    """``verify --json``: see ``docs/cli.md``."""
    first = r.witnesses[0] if r.witnesses else None
    return {
        "version": JSON_VERSION,
        "name": r.name,
        "instance": dict(r.instance),
        "checks": [
            {
                "name": c.name,
                "holds": c.holds,
                "symbolic": c.symbolic,
                "settled": list(c.settled),
                "numeric_error": _finite(c.numeric_error),
            }
            for c in r.checks
        ],
        "witnesses": [witness_json(w) for w in r.witnesses],
        "derived": first and first.derived,
        "measured": first and first.measured,
        "verdict": first and first.verdict,
        "ok": r.ok,
    }


# --- the report ------------------------------------------------------------------------------


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise SymcompError(
            "analyze --report draws its plots with matplotlib, which is not installed; "
            "install the extra: pip install 'symcomp[report]'"
        ) from None
    return matplotlib


def _svg(fig) -> str:
    import io

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


RC = {"svg.hashsalt": "symcomp", "svg.fonttype": "none", "font.size": 9}


def plot_groups(a: Analysis) -> str:
    """Horizontal bars: each group's redundant parameters (log scale where they span three
    decades), labelled with the share of the parameters; the overlap hatched (it is taken
    off)."""
    mpl = require_matplotlib()
    from matplotlib.figure import Figure

    lines, _ = folded(a)
    with mpl.rc_context(RC):
        fig = Figure(figsize=(7.5, 0.3 * len(lines) + 1.2))
        ax = fig.add_subplot()
        names = [g.name for g in lines][::-1]
        values = [abs(g.dimension) for g in lines][::-1]
        negative = [g.dimension < 0 for g in lines][::-1]
        bars = ax.barh(names, values, color=["#bbbbbb" if n else "#3a6ea5" for n in negative])
        for bar, n in zip(bars, negative, strict=True):
            if n:
                bar.set_hatch("//")
        if values and max(values) > 1000 * max(min(values), 1):
            ax.set_xscale("log")
        for bar, g in zip(bars, lines[::-1], strict=True):
            label = f" {g.dimension:,} ({percent(share(g.dimension, a.parameters))})"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center")
        ax.set_xlabel("redundant parameters (hatched: the overlap, taken off)")
        ax.set_title(f"{a.name}: redundancy per group")
        ax.margins(x=0.25)
        return _svg(fig)


def per_layer(a: Analysis) -> tuple[list[int], dict[str, list[int]], dict[str, int]]:
    """(layers, each group's dimension per layer, each group's dimension of the whole model)."""
    layers = sorted({layer for g in a.groups for layer, _ in g.per_layer})
    each, whole = {}, {}
    for g in folded(a)[0]:
        at = dict(g.per_layer)
        if at:
            each[g.name] = [at.get(layer, 0) for layer in layers]
        if rest := g.dimension - sum(at.values()):
            whole[g.name] = rest
    return layers, each, whole


def plot_layers(a: Analysis) -> str:
    """Stacked bars: the redundancy in each layer by group, and a last bar for the whole model
    (groups per model, unread rows, the overlap's constant part); taken-off parts below 0."""
    mpl = require_matplotlib()
    from matplotlib.figure import Figure

    layers, each, whole = per_layer(a)
    labels = [str(i) for i in layers] + ["model"]
    names = list(dict.fromkeys([*each, *whole]))
    cmap = mpl.colormaps["tab20"]
    with mpl.rc_context(RC):
        fig = Figure(figsize=(max(6.0, 0.25 * len(labels) + 3), 4.0))
        ax = fig.add_subplot()
        up, down = [0.0] * len(labels), [0.0] * len(labels)
        for i, name in enumerate(names):
            values = [*each.get(name, [0] * len(layers)), whole.get(name, 0)]
            bottoms = [u if v >= 0 else d for v, u, d in zip(values, up, down, strict=True)]
            ax.bar(labels, values, bottom=bottoms, label=name, color=cmap(i % 20))
            up = [u + max(v, 0) for u, v in zip(up, values, strict=True)]
            down = [d + min(v, 0) for d, v in zip(down, values, strict=True)]
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("layer")
        ax.set_ylabel("redundant parameters")
        ax.set_title(f"{a.name}: redundancy per layer")
        if len(labels) > 40:
            for k, tick in enumerate(ax.get_xticklabels()):
                tick.set_visible(k % 8 == 0 or k == len(labels) - 1)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _svg(fig)


def _rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    head = ["group", "id", "acts on", "per", "formula", "dimension", "% of parameters"]
    rows = [
        [
            g.name,
            g.catalogue_id,
            g.acts_on,
            g.per,
            g.formula,
            f"{g.dimension:,}",
            percent(share(g.dimension, a.parameters)),
        ]
        for g in folded(a)[0]
    ]
    return head, rows


def _layer_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    layers, each, whole = per_layer(a)
    rows = []
    for k, layer in enumerate(layers):
        total = sum(v[k] for v in each.values())
        top = sorted(((v[k], n) for n, v in each.items() if v[k] > 0), reverse=True)[:3]
        rows.append([str(layer), f"{total:,}", ", ".join(n for _, n in top)])
    if whole:
        top = sorted(((v, n) for n, v in whole.items() if v > 0), reverse=True)[:3]
        rows.append(["model", f"{sum(whole.values()):,}", ", ".join(n for _, n in top)])
    return ["layer", "redundant", "largest groups"], rows


def _summary(a: Analysis) -> list[tuple[str, str]]:
    sizes = ", ".join(f"{k}={v:,}" for k, v in a.sizes)
    out = [
        ("sizes", sizes),
        ("parameters", f"{a.parameters:,}"),
        ("redundant", f"{a.redundant:,} ({percent(share(a.redundant, a.parameters))})"),
        ("reduced parameters", f"{a.reduced_parameters:,}"),
        ("formula", a.formula),
    ]
    out += [
        ("measured", line.strip().removeprefix("measured: "))
        for w in a.measured
        for line in w.lines()
    ]
    return out


def markdown(a: Analysis, groups_svg: str, layers_svg: str) -> str:
    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
        ]

    _, zero = folded(a)
    out = [f"# {a.name}: redundant parameters", ""]
    out += [
        f"- **{key}**: `{value}`" if key == "formula" else f"- **{key}**: {value}"
        for key, value in _summary(a)
    ]
    out += ["", "## Per group", "", f"![redundancy per group]({groups_svg})", ""]
    out += table(*_rows(a))
    if zero:
        out += ["", folded_line(zero)]
    out += ["", "## Per layer", "", f"![redundancy per layer]({layers_svg})", ""]
    out += table(*_layer_rows(a))
    return "\n".join(out) + "\n"


def html_page(a: Analysis, groups: str, layers: str) -> str:
    e = html.escape

    def table(head: list[str], rows: list[list[str]]) -> str:
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"

    def inline(svg: str) -> str:  # drop the XML prolog and doctype: the SVG element alone
        return svg[svg.index("<svg") :]

    _, zero = folded(a)
    summary = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _summary(a))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(a.name)}: redundant parameters</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:left;overflow-wrap:anywhere}dt{font-weight:bold}svg{max-width:100%;"
        "height:auto}</style></head><body>",
        f"<h1>{e(a.name)}: redundant parameters</h1>",
        f"<dl>{summary}</dl>",
        "<h2>Per group</h2>",
        inline(groups),
        table(*_rows(a)),
        f"<p>{e(folded_line(zero))}</p>" if zero else "",
        "<h2>Per layer</h2>",
        inline(layers),
        table(*_layer_rows(a)),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_report(a: Analysis, path: Path) -> list[Path]:
    """Write the report to ``path`` (``.md``: the SVGs beside it, ``<stem>-groups.svg`` and
    ``<stem>-layers.svg``; ``.html``: one file, the SVGs inline); return the files written."""
    from symcomp.spec.writer import write_atomic

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".md", ".html", ".htm"):
        raise SymcompError(
            f"--report {path}: unknown report type {path.suffix or '(none)'!r}; "
            "accepted: a file name ending in .md or .html"
        )
    groups, layers = plot_groups(a), plot_layers(a)
    if suffix != ".md":
        write_atomic(path, html_page(a, groups, layers))
        return [path]
    svgs = [path.with_name(f"{path.stem}-groups.svg"), path.with_name(f"{path.stem}-layers.svg")]
    for svg, text in zip(svgs, (groups, layers), strict=True):
        write_atomic(svg, text)
    write_atomic(path, markdown(a, svgs[0].name, svgs[1].name))
    return [path, *svgs]
