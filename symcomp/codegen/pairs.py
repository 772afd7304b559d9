"""Pass: find the GL(k) pairs among a package's groups, the groups geodesic sharpness quotients.

A group is a **GL(k) pair** when it is the full GL(k) (not a subgroup such as the RoPE-commuting
one) and moves every parameter by a multiplication with the element alone, on one of two sides:

- the ``G`` factor: ``X E`` (rows of ``X`` read as ``n x k``), or ``Eᵀ X`` (read transposed);
- the ``H`` factor: ``X E^-T``, or ``E^-1 X`` (read transposed).

Then ``G Hᵀ`` is invariant, and the pair metrics of :mod:`symcomp.symmetry.geometry` apply to the
stacked factors ``G = [X_1; X_2; ...]`` and ``H = [...]``. The per-head gauges (A1: ``W_Q``,
``b_Q`` against ``W_K``, ``b_K``; A3: ``W_V``, ``b_V`` against ``W_Oᵀ``) are such pairs; a
translation, a scaling or a rotation of the residual stream is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from symcomp.codegen.actions import GroupCode

# (side, f(E)) of a multiplicative action -> (factor, read transposed)
ROLES = {
    ("right", "E"): ("G", False),
    ("left", "E^T"): ("G", True),
    ("right", "E^-T"): ("H", False),
    ("left", "E^-1"): ("H", True),
}


@dataclass(frozen=True)
class PairRoles:
    """A GL(k) pair group: for each parameter pattern it moves, its factor and orientation."""

    group: str
    members: tuple[tuple[str, str, bool], ...]  # (target pattern, "G" or "H", transposed)


def pair_roles(group: GroupCode) -> PairRoles | None:
    """The roles of ``group``'s parameters if it is a GL(k) pair, else None."""
    if group.kind != "GL" or group.commutes_with_rope or not group.acts:
        return None
    members = []
    for act in group.acts:
        if act.form is None or act.form[2] != 0.0 or act.form[:2] not in ROLES:
            return None
        members.append((act.target, *ROLES[act.form[:2]]))
    if {factor for _, factor, _ in members} != {"G", "H"}:
        return None
    return PairRoles(group.name, tuple(members))


def find_pairs(groups: tuple[GroupCode, ...]) -> tuple[PairRoles, ...]:
    """Every GL(k) pair among ``groups``, in their order."""
    return tuple(roles for group in groups if (roles := pair_roles(group)) is not None)


def gl_subgroups(groups: tuple[GroupCode, ...]) -> tuple[str, ...]:
    """The GL(k) gauges that are subgroups (RoPE-commuting): not pairs, named in the docs."""
    return tuple(g.name for g in groups if g.kind == "GL" and g.commutes_with_rope)
