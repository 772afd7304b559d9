"""The pieces of ``model.py``'s text: the frozen data handed to the template, value and
parameter names, sizes as code in the instance's sizes ``s``, and docstring literals.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from symcomp.ir.graph import Axis, OpNode
from symcomp.spec.params import Sizes

LINE_LENGTH = 100
FORWARD_INDENT = 8  # statements of a forward method

# --- frozen data for the template -------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    """One ``self.<name> = <value>`` line of an ``__init__``."""

    name: str
    value: str


@dataclass(frozen=True)
class ModuleClass:
    """A generated ``nn.Module``: its parameters and submodules, and its forward body."""

    name: str
    docstring: str  # the full indented docstring literal
    attrs: tuple[Assign, ...]
    forward_doc: str = ""
    forward: tuple[str, ...] = ()  # lines, relative to the body's indentation
    uses_sizes: bool = False  # the forward reads ``s = self.s``
    context: bool = False  # the forward reads the model's Context (positions, mask, cache)


@dataclass(frozen=True)
class Statement:
    """What one op (or one fused group of ops) emits: code lines and an optional comment."""

    lines: tuple[str, ...]
    comment: str = ""


# --- names ------------------------------------------------------------------------------------

RESERVED = frozenset(
    {"x", "s", "seq_len", "mask", "F", "nn", "math", "torch", "self", "input_ids", "block"}
)


def _identifier(value: str, strip: str = "") -> str:
    """A local variable name for the graph value ``value``, less the scope prefix ``strip``."""
    name = value.removeprefix(strip)
    name = re.sub(r"\W", "_", name)
    return name + "_" if name in RESERVED or not name.isidentifier() else name


@functools.lru_cache(maxsize=65536)
def _layer_of(name: str) -> int | None:
    """The layer of a value (``L3.attn.q``) or parameter (``layers.3.attn.W_Q``), or None."""
    m = re.match(r"(?:L|layers\.)(\d+)\.", name)
    return int(m.group(1)) if m else None


def _node(op: OpNode, slot: str) -> str:
    """The node that the op's input ``slot`` reads."""
    i = op.input(slot)
    assert i is not None, f"{op.name} has no input {slot}"
    return i.node


def _module_path(param: str) -> str:
    """``layers.0.attn.W_Q`` -> ``layers.0.attn``."""
    return param.rsplit(".", 1)[0]


# --- sizes as code ----------------------------------------------------------------------------


def _axis_size(axis: Axis, sizes: Sizes) -> str:
    """The size of a parameter axis as an expression in the instance's sizes ``s``."""
    heads = "s.heads * s.head_width"
    kv = "s.kv_heads * s.head_width"
    if axis.kind == "resid":
        code, value = "s.width", sizes.width
    elif axis.kind == "vocab":
        code, value = "s.vocab", sizes.vocab
    elif axis.kind == "mlp":
        code, value = "s.hidden", sizes.hidden
    elif axis.kind == "positions":
        offset = axis.size - sizes.positions  # type: ignore[operator]
        code = "s.positions" + (f" + {offset}" if offset else "")
        value = sizes.positions + offset
    elif axis.kind in ("token_types", "experts"):  # a constant of the spec, not a size
        code, value = str(axis.size), axis.size
    elif axis.kind in ("qk", "v") and axis.point in ("q", "merged", "q_norm"):
        code, value = heads, sizes.heads * sizes.head_width
    elif axis.kind == "qk" and axis.point == "head":  # a per-head QK-norm's gain
        code, value = "s.head_width", sizes.head_width
    elif axis.kind in ("qk", "v") and axis.point in ("k", "v", "k_norm"):
        code, value = kv, sizes.kv_heads * sizes.head_width
    else:
        raise NotImplementedError(f"no size expression for the parameter axis {axis}")
    assert value == axis.size, f"{axis}: {code} is {value}, not {axis.size}"
    return code


# --- docstrings -------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


_GLUE = "\x00"


def _wrap_text(text: str, width: int) -> list[str]:
    """Lines of at most ``width``, never breaking inside a short parenthesis like (B, T, d)."""

    def glue(m: re.Match[str]) -> str:
        return m.group(0).replace(" ", _GLUE) if len(m.group(0)) <= 30 else m.group(0)

    text = re.sub(r"\([^()]*\)", glue, text)
    # a word longer than a whole line (a URL, a hostile description) is cut: never a long line
    lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=True)
    return [line.replace(_GLUE, " ") for line in lines]


def _docstring(paragraphs: Sequence[str], indent: int) -> str:
    """A docstring literal: the first paragraph is the summary; wrapped to the line length."""
    pad = " " * indent
    width = LINE_LENGTH - indent
    first, *rest = [_escape(p.strip()) for p in paragraphs if p.strip()]
    if not rest and len(first) + 6 <= width:
        return f'"""{first}"""'
    lines = _wrap_text(first, width - 3)
    out = ['"""' + lines[0], *lines[1:]]
    for p in rest:
        out.append("")
        out.extend(_wrap_text(p, width))
    out.append('"""')
    return "\n".join((pad + line if line else "") if i else line for i, line in enumerate(out))
