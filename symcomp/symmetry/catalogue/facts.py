"""The questions about a graph that the rules ask: who produces and who reads a value, which
norms there are, which readers are plain linear maps, which writers feed a point of the stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

import sympy

from symcomp.ir.graph import Graph, OpNode
from symcomp.symmetry.catalogue.base import _SLICED, T, _pattern, _short, _size_text

# ops that pass a stream value on: a residual add, a constant scale, and an expert's output
# times its routing weight (a per-token scalar: rotations and shifts along 1 pass through)
PASS_THROUGH = frozenset({"add", "scale", "expert_weight"})


class Facts:
    """Questions about one graph that the rules ask, answered once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producer = {op.output: op for op in graph.ops}
        self.consumers: dict[str, list[OpNode]] = {}
        self.by_name: dict[str, OpNode] = {}
        for op in graph.ops:
            self.by_name.setdefault(op.name, op)
            for inp in op.inputs:
                self.consumers.setdefault(inp.node, []).append(op)

    def first_layer_or_global(self, op: OpNode) -> bool:
        name = op.name
        return not name.startswith("L") or name.startswith("L0.")

    def norms(self) -> list[tuple[OpNode, list[int] | None]]:
        """Each norm of layer 0 or outside the layers, with the layers holding a norm of the
        same name (None outside the layers)."""
        out = []
        for op in self.graph.ops:
            if op.kind != "norm" or not self.first_layer_or_global(op):
                continue
            layers = None
            if op.name.startswith("L0."):
                local = op.name.split(".", 1)[1]
                layers = list(range(self.graph.arch.layers))
                out.append(([self.producer_named(f"L{i}.{local}") for i in layers], layers))
            else:
                out.append(([op], layers))
        return out

    def producer_named(self, name: str) -> OpNode:
        return self.by_name[name]

    def readers(self, value: str) -> list[OpNode]:
        return self.consumers.get(value, [])

    @cache  # noqa: B019 - one Facts per graph, discarded with it
    def feeds_only(self, value: str, kinds: frozenset[str]) -> bool:
        """Every path from ``value`` reaches an op of ``kinds`` before any other op (adds and
        constant scales pass the value on)."""
        readers = self.readers(value)
        if not readers:
            return False
        for op in readers:
            if op.kind in PASS_THROUGH:
                if not self.feeds_only(op.output, kinds):
                    return False
            elif op.kind not in kinds:
                return False
        return True

    def layernorm_only(self, value: str) -> bool:
        readers = self._stream_readers(value)
        return bool(readers) and all(op.attr("type") == "layernorm" for op in readers)

    def _stream_readers(self, value: str) -> list[OpNode]:
        if not self.feeds_only(value, frozenset({"norm"})):
            return []
        out: list[OpNode] = []
        for op in self.readers(value):
            out += self._stream_readers(op.output) if op.kind in PASS_THROUGH else [op]
        return out

    def param(self, op: OpNode, slot: str) -> str | None:
        inp = op.input(slot)
        return inp.node if inp is not None and inp.node in self.graph.param else None

    def tied(self, param: str) -> bool:
        return len(self.graph.uses(param)) > 1


def _gain(facts: Facts, norm: OpNode, name: Callable[[str], str] = _pattern) -> str:
    gain = name(facts.param(norm, "gain") or "")
    # a gain stored as w (Gemma) multiplies by 1 + w
    return f"(1 + {gain})" if norm.attr("gain_form") == "one_plus_w" else gain


def _linear_readers(facts: Facts, norm: OpNode) -> list[OpNode] | None:
    """The norm's readers if every one is a linear map (or an unembedding, or a router, which
    reads x W) with its own, untied weight; otherwise None."""
    readers = facts.readers(norm.output)
    if not readers or any(op.kind not in ("linear", "unembed", "route") for op in readers):
        return None
    if any(facts.tied(facts.param(op, "W") or "") for op in readers):
        return None
    return readers


def _fresh_writers(facts: Facts, value: str) -> Iterator[OpNode]:
    """Writers into ``value`` since the last point anything read the stream."""
    op = facts.producer.get(value)
    if op is None:
        return
    if op.kind == "add":
        for inp in op.inputs:
            if [c.name for c in facts.readers(inp.node)] == [op.name]:
                yield from _fresh_writers(facts, inp.node)
    elif op.kind == "linear":
        yield op


def _rows(facts: Facts, param: str) -> tuple[str, sympy.Expr]:
    """Rows of a writer table or weight, symbolically where they scale with a size."""
    shape = facts.graph.param[param].shape
    local = _short(param)
    if local == "W_P":  # max_positions rows plus the unread leading ones (OPT)
        extra = shape[0] - facts.graph.arch.max_positions
        return f"positions + {extra}", T + extra
    if local in _SLICED and local != "W_T":
        rows = _SLICED[local][0][0]
        return _size_text(rows), rows
    return str(shape[0]), sympy.Integer(shape[0])
