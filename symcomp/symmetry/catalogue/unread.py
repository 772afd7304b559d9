"""Unread parameters: rows of an embedding table that no input can select.

The model's output does not depend on them at all, so each is ``d`` free directions: not a
group acting on other parameters, but part of the redundant count, reported as its own line.
OPT's position table keeps two leading rows that no position indexes (positions start at 2);
BERT's token-type table has a row per type, and the model's input is token ids alone (type 0).
"""

from __future__ import annotations

from collections.abc import Iterator

import sympy

from symcomp.symmetry.catalogue.base import UnreadRows, Worked, d
from symcomp.symmetry.catalogue.facts import Facts


def unread_rows(facts: Facts) -> Iterator[UnreadRows]:
    """Rows of an embedding table that no input reads (OPT's two leading position rows; the
    token-type rows beyond type 0, since the model's input is token ids alone)."""
    for op in facts.graph.ops:
        if op.kind != "embed":
            continue
        W = facts.param(op, "W") or ""
        rows = facts.graph.param[W].shape[0]
        index = op.attr("index")
        # positions counted over non-padding tokens also read row offset - 1 (for padding)
        positions = facts.graph.arch.max_positions + (op.attr("padding") is not None)
        read = {"token": rows, "position": positions, "token_type": 1}[index]
        if rows > read:
            # positions leave the leading rows unread, token types the trailing ones
            first = 0 if index == "position" else read
            yield UnreadRows(W, first, first + rows - read, sympy.Integer(rows - read) * d)


WORKED = (
    # the two leading rows of W_P
    Worked(unread_rows, "opt-125m", "2*d", 1_536),
    # the second token-type row
    Worked(unread_rows, "bert-base", "d", 768),
)
