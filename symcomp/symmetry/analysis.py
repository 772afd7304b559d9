"""The redundant parameters as a closed form, group by group: ``count_redundancy`` (the count)
and ``tabulate`` (the table of ``symcomp analyze``), from the groups a graph admits.

The named groups of :mod:`.catalogue` give each term of the formula (dimension per unit times
the number of units, in the symbolic sizes). Where groups overlap (B4 with B6, B4 with the
unread rows, B4 with a parallel block's bias transfer), the span is smaller than the sum: the
overlap is measured as ``sum of group dimensions - rank of all vertical vectors`` on tiny
instances of the same structure with one and two layers, which gives it as ``a + b L``, and it
is reported as its own line so the table sums to ``redundant``. No full-size matrix is built:
the full-size numbers are the formula evaluated at the spec's sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy

from symcomp.errors import DerivationError
from symcomp.ir.graph import Graph, build_graph
from symcomp.lang import parse_expr, unparse
from symcomp.spec.model import Architecture, CustomGroup, RotaryPositions, Spec
from symcomp.spec.params import parameter_count, parameter_shapes, sizes_of
from symcomp.symmetry.catalogue import (
    SIZE_SYMBOLS,
    GroupInfo,
    Symmetries,
    derive_groups,
    select_groups,
)

if TYPE_CHECKING:
    from torch import Tensor

    from symcomp.verify.witness import Witness

SymmetrySetting = str | list[str | CustomGroup]

L = SIZE_SYMBOLS["layers"]


@dataclass(frozen=True)
class GroupLine:
    """One row of the analysis table."""

    name: str
    catalogue_id: str
    acts_on: str
    per: str
    dimension_each: str
    units: str
    formula: str
    dimension: int
    action: tuple[tuple[str, str], ...] = ()
    """each parameter the group moves, and its new value in the spec language"""
    per_layer: tuple[tuple[int, int], ...] = ()
    """(layer, dimension there) for the layers its units lie in; the rest of ``dimension`` is
    the whole model's (per model, the unread rows, the overlap)"""


@dataclass(frozen=True)
class Analysis:
    """What ``symcomp analyze`` reports; ``--json`` prints it."""

    name: str
    parameters: int
    redundant: int
    reduced_parameters: int
    formula: str
    groups: tuple[GroupLine, ...]
    measured: tuple[Witness, ...] = ()
    """The formula against the Jacobian nullity of tiny instances (:mod:`symcomp.verify.witness`);
    empty when the caller skipped the measurement."""
    sizes: tuple[tuple[str, int], ...] = ()
    """The spec's sizes by size symbol (d, L, h, g, k, f, V, T, r): the formulas' values."""

    @property
    def confirmed(self) -> bool:
        """Whether every measurement confirms the count (vacuously true without one)."""
        return all(w.ok for w in self.measured)


def _sizes(arch: Architecture) -> dict[sympy.Symbol, int]:
    s = sizes_of(arch).as_dict()
    return {sym: s[name] for name, sym in SIZE_SYMBOLS.items()}


def head_grouping(arch: Architecture, n: int) -> tuple[int, int]:
    """(heads, kv_heads) of a tiny instance with the grouping of ``arch``: ``n`` heads each
    (multi-head), ``n`` on one key/value head (multi-query), or ``2 n`` on ``n`` (grouped)."""
    att = arch.attention
    if att.kv_heads == att.heads:
        return n, n
    if att.kv_heads == 1:
        return n, 1
    return 2 * n, n


def measurement_instance(arch: Architecture, layers: int = 1) -> Architecture:
    """A tiny architecture with the same structure: the design note's sizes (d = 8, k = 4,
    f = 12, T = 6), the same head grouping and relation of ``g k`` to ``d``
    (:func:`value_width_relation`), an even rotated width, a RoPE base of 10 and norm eps 0.1
    (near-symmetries stay far from exact ones), and V = 2 d + 4 (:func:`tiny_vocab`; more for
    a parallel block: :func:`parallel_vocab`)."""
    att = arch.attention
    heads, kv = head_grouping(arch, 2)
    width = value_width_relation(arch, kv * 4, 8)
    positions = arch.positions
    if isinstance(positions, RotaryPositions):
        fraction = 1.0 if positions.rotated_fraction == 1.0 else 0.5
        positions = positions.model_copy(update={"base": 10.0, "rotated_fraction": fraction})
    window = att.sliding_window and min(att.sliding_window, 3)
    return arch.model_copy(
        update={
            "vocab_size": parallel_vocab(arch, tiny_vocab(width), width=width, hidden=12),
            "max_positions": 6,
            "width": width,
            "layers": layers,
            "norm": arch.norm.model_copy(update={"eps": 0.1}),
            "attention": att.model_copy(
                update={"heads": heads, "kv_heads": kv, "head_width": 4, "sliding_window": window}
            ),
            "positions": positions,
            "mlp": arch.mlp.model_copy(update={"hidden": 12}),
        }
    )


def fewer_experts(arch: Architecture, spare: int = 1) -> Architecture:
    """``arch`` with ``top_k + spare`` experts (at most as many as it has): ``spare = 1`` is the
    fewest that leave the router a choice (each expert selected on some positions and not on
    others), so that each expert's own groups, the router's shift and the permutation of the
    experts are all there to measure; more experts only repeat the per-expert terms (Mixtral's
    eight made its measurement instance 3,416 parameters, a QR eight times llama's). The
    count's terms name the expert count as a number, so a formula checked on this instance is
    the derivation's own at its experts."""
    experts = arch.mlp.experts
    if experts is None or experts.count <= experts.top_k + spare:
        return arch
    fewer = experts.model_copy(update={"count": experts.top_k + spare})
    return arch.model_copy(update={"mlp": arch.mlp.model_copy(update={"experts": fewer})})


def tiny_vocab(width: int) -> int:
    """The vocabulary of a tiny instance of width ``d``: ``2 d + 4``. Each position's
    log-probabilities give ``V - 1`` rows, and the unembedding is generic (its centred columns
    span the stream, with room to spare) only when ``V - 1`` exceeds ``d``; every parameter
    more is Jacobian work (its QR grows as the cube of the parameter count), and the
    embedding and unembedding are most of a tiny instance's parameters."""
    return 2 * width + 4


def value_width_relation(arch: Architecture, value_width: int, width: int) -> int:
    """``width``, or the nearest tiny width that keeps the full model's relation of its value
    width ``g k`` to ``d`` (below, equal or above): whether a value-bias shift can reach the
    stream along 1 alone turns on it (A4' ``value_bias_centering``)."""
    full = arch.attention.kv_heads * arch.attention.head_width - arch.width
    if full == 0:
        return value_width
    if full < 0:
        return max(width, value_width + 2)
    return min(width, value_width - 2)


def parallel_vocab(arch: Architecture, vocab: int, *, width: int, hidden: int) -> int:
    """``vocab``, or more for a parallel block: its layer 0 MLP reads the current token's
    embedding only, so the instance's V tokens give it ``V d`` conditions. Short of twice its
    weights (a gated MLP has three matrices), the instance has null directions of its own
    (measured: 48 of them, moving W_E and the MLP, at V = 40, d = 8, f = 12 gated)."""
    if not arch.block.startswith("parallel"):
        return vocab
    weights = (3 if arch.mlp.gated else 2) * width * hidden
    return max(vocab, -(-2 * weights // width))


def layer_kinds(arch: Architecture) -> list[tuple[bool, bool]]:
    """What sets each layer apart from the others: (rotates nothing, has the sliding window)."""
    nope = set(getattr(arch.positions, "nope_layers", None) or ())
    sliding = arch.attention.sliding_layers
    return [
        (i in nope, bool(arch.attention.sliding_window) and (sliding is None or i in sliding))
        for i in range(arch.layers)
    ]


def layer_pattern(arch: Architecture, repeat: int = 1) -> Architecture | None:
    """The architecture with one layer of each kind of :func:`layer_kinds` (in order of first
    appearance, the whole pattern ``repeat`` times), or None when every layer is alike. Its
    count is the derivation's own at that depth: a formula whose units count the listed layers
    (NoPE layers, say) holds at the spec's depth only."""
    kinds = layer_kinds(arch)
    distinct = list(dict.fromkeys(kinds))
    if len(distinct) < 2:
        return None
    pattern = distinct * repeat
    update: dict = {"layers": len(pattern)}
    if isinstance(arch.positions, RotaryPositions) and arch.positions.nope_layers:
        nope = [i for i, (n, _) in enumerate(pattern) if n]
        update["positions"] = arch.positions.model_copy(update={"nope_layers": nope})
    if arch.attention.sliding_layers is not None:
        sliding = [i for i, (_, w) in enumerate(pattern) if w]
        update["attention"] = arch.attention.model_copy(update={"sliding_layers": sliding})
    return arch.model_copy(update=update)


def measurement_layers(spec: Spec) -> int:
    """The layers of the measurement instance: one, or two where a listed group reaches across
    layers (``layers.{i+1}.``) or names layers, which one layer could not show."""
    from symcomp.symmetry.engine import group_reach

    if spec.symmetries == "auto":
        return 1
    for item in spec.symmetries:
        if isinstance(item, CustomGroup) and (item.layers or group_reach(item) != (0, 0)):
            return min(spec.architecture.layers, 2)
    return 1


def parameter_offsets(arch: Architecture) -> tuple[dict[str, int], int]:
    """Where each parameter starts in the flat vector (the order of ``parameter_shapes``), and
    the total."""
    import torch

    offsets, start = {}, 0
    for name, shape in parameter_shapes(arch).items():
        offsets[name] = start
        start += int(torch.tensor(shape).prod())
    return offsets, start


def vertical_columns(
    graph: Graph, syms: Symmetries, params: Mapping[str, Tensor]
) -> tuple[Tensor, tuple[tuple[str, int, int], ...]]:
    """Every named group's vertical vectors and the unread rows' unit vectors, as the columns of
    one (parameters, directions) matrix, with each group's (name, first, stop) column range."""
    import torch

    from symcomp.symmetry.action import vertical_vectors

    offsets, total = parameter_offsets(graph.arch)
    shapes = parameter_shapes(graph.arch)
    columns, ranges, start = [], [], 0
    for gi in syms.groups:
        for group in gi.all_groups:
            V = vertical_vectors(group, graph.arch, graph, params)
            if not bool(torch.isfinite(V).all()):
                raise DerivationError(
                    f"group {group.name}: its action gives non-finite values at a generic point; "
                    "'^' is elementwise (diag(s)^-2 divides by the zeros off the diagonal: "
                    "write diag(s^-2))"
                )
            columns.append(V)
            ranges.append((gi.name, start, start + V.shape[1]))
            start += V.shape[1]
    for unread in syms.unread:
        n = unread.rows * shapes[unread.parameter][1]
        eye = torch.zeros(total, n, dtype=torch.float64)
        base = offsets[unread.parameter] + unread.first * shapes[unread.parameter][1]
        eye[base : base + n].copy_(torch.eye(n, dtype=torch.float64))
        columns.append(eye)
        ranges.append((f"unread rows of {unread.parameter}", start, start + n))
        start += n
    if not columns:
        return torch.zeros(total, 0, dtype=torch.float64), ()
    return torch.cat(columns, dim=1), tuple(ranges)


def _span(graph: Graph, syms: Symmetries, seed: int = 0) -> tuple[int, int]:
    """(sum of the groups' dimensions and unread rows, rank of all their vertical vectors) at a
    generic point of ``graph``."""
    import torch

    from symcomp.verify.generic import generic_point
    from symcomp.verify.nullity import one_thread

    with one_thread():
        V, _ = vertical_columns(graph, syms, generic_point(graph, seed))
        if V.shape[1] == 0:  # no continuous group: discrete ones only, or none
            return 0, 0
        s = torch.linalg.svdvals(V)
    return V.shape[1], int((s > s[0] * 1e-9).sum())


def groups_of(graph: Graph, symmetries: SymmetrySetting = "auto") -> Symmetries:
    """The derived groups, or the ones a spec lists."""
    syms = derive_groups(graph)
    if symmetries == "auto":
        return syms
    return select_groups(syms, list(symmetries), graph.arch.layers)


def overlap_formula(arch: Architecture, symmetries: SymmetrySetting = "auto") -> sympy.Expr:
    """The overlap of the named groups as ``a + b L``, measured at one and two layers and
    checked at three."""
    values = []
    for layers in (1, 2, 3):
        tiny = measurement_instance(arch, layers)
        graph = build_graph(tiny)
        claimed, rank = _span(graph, groups_of(graph, symmetries))
        values.append(claimed - rank)
    a, b = 2 * values[0] - values[1], values[1] - values[0]
    assert values[2] == a + 3 * b, f"the overlap is not linear in the layers: {values}"
    return sympy.Integer(a) + sympy.Integer(b) * L


def _total(syms: Symmetries, overlap: sympy.Expr) -> sympy.Expr:
    terms = [gi.total for gi in syms.groups] + [u.count for u in syms.unread] + [-overlap]
    return sympy.expand(sum(terms, sympy.Integer(0)))


@dataclass(frozen=True)
class Count:
    """The closed-form redundancy of a spec's groups: their terms and the unread rows, less the
    overlap of the groups (measured on tiny instances as ``a + b L``)."""

    overlap: sympy.Expr
    formula: sympy.Expr

    def at(self, arch: Architecture) -> int:
        """The redundancy at the sizes of ``arch``."""
        return int(self.formula.subs(_sizes(arch)))


FORMULA_DEPTH = 3
"""The fewest layers whose graph shows how each group's units grow with L: a first, a middle and
a last layer. In one layer, the first is the last (a group of the last layer alone reads as one
of every layer); in two, every layer after the first is the last."""


def count_redundancy(
    arch: Architecture, syms: Symmetries, symmetries: SymmetrySetting = "auto"
) -> Count:
    """The closed-form count of the groups ``syms`` derived from the graph of ``arch``
    (``symmetries``: the spec's setting, which the overlap's tiny instances select again).
    Shallower than :data:`FORMULA_DEPTH` (and alike in every layer), the groups' terms are
    read off the graph of the same architecture that deep: ``syms`` hold at ``arch``'s depth,
    but their units there do not say how they grow with L."""
    overlap = overlap_formula(arch, symmetries)
    if arch.layers < FORMULA_DEPTH and layer_pattern(arch) is None:
        deep = build_graph(arch.model_copy(update={"layers": FORMULA_DEPTH}))
        syms = groups_of(deep, symmetries)
    return Count(overlap, _total(syms, overlap))


def tabulate(name: str, arch: Architecture, syms: Symmetries, count: Count) -> Analysis:
    """The table of ``symcomp analyze``: one line per group, the unread rows and the overlap."""
    from symcomp.lang.sympy_printer import remembered_assumptions

    sizes = _sizes(arch)
    with remembered_assumptions():
        lines = [
            GroupLine(
                gi.group.name,
                gi.catalogue_id,
                gi.acts_on,
                gi.per,
                str(gi.dimension),
                str(gi.units),
                str(gi.total),
                int(gi.total.subs(sizes)),
                tuple((path, unparse(parse_expr(text))) for path, text in gi.group.acts.items()),
                _per_layer(gi, arch.layers, int(gi.total.subs(sizes))),
            )
            for gi in syms.groups
        ]
    for unread in syms.unread:
        lines.append(
            GroupLine(
                f"unread_rows_{unread.parameter.replace('.', '_')}",
                "",
                unread.parameter,
                f"{unread.rows} rows",
                "width",
                str(unread.rows),
                str(unread.count),
                int(unread.count.subs(sizes)),
            )
        )
    overlap = count.overlap
    if overlap != 0:
        lines.append(
            GroupLine(
                "overlap",
                "",
                "shared directions",
                "",
                "",
                "",
                str(-overlap),
                -int(overlap.subs(sizes)),
                per_layer=tuple((i, -b) for i in range(arch.layers) if (b := _per_unit(overlap))),
            )
        )
    redundant = count.at(arch)
    assert redundant == sum(line.dimension for line in lines)
    parameters = parameter_count(arch)
    formula = str(count.formula)
    return Analysis(
        name,
        parameters,
        redundant,
        parameters - redundant,
        formula,
        tuple(lines),
        sizes=tuple((str(sym), value) for sym, value in sizes.items()),
    )


def _per_unit(overlap: sympy.Expr) -> int:
    """The overlap's term per layer: ``b`` of ``a + b L``."""
    return int(sympy.expand(overlap).coeff(L, 1))


def _per_layer(gi: GroupInfo, depth: int, dimension: int) -> tuple[tuple[int, int], ...]:
    """The dimension of ``gi`` in each layer: each copy has units in the layers it lists (where
    its relative references exist), or one unit in the lowest layer it names in full, or (per
    model, or naming no layer) one unit of the whole model; units of one group are alike."""
    import re

    from symcomp_runtime.layers import unit_layers

    from symcomp.symmetry.engine import group_reach

    slots: list[int | None] = []
    for group in gi.all_groups:
        named = [
            int(i)
            for path in group.acts
            for m in [re.match(r"layers\.(\d+)\.", path)]
            if m
            for i in m.groups()
        ]
        if group.per != "model" and len(named) < len(group.acts):
            slots += unit_layers(group.layers, group_reach(group), depth)
        else:
            slots.append(min(named) if named and gi.per != "model" else None)
    each: dict[int, float] = {}
    for layer in slots:
        if layer is not None:
            each[layer] = each.get(layer, 0) + dimension / len(slots)
    return tuple((layer, round(value)) for layer, value in sorted(each.items()))
