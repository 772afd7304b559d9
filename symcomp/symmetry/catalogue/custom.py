"""Groups as the spec declares them: the closed-form size of a custom group, the groups a spec
lists instead of ``auto``, and any group's action as a SymPy matrix expression."""

from __future__ import annotations

import sympy
from symcomp_runtime.layers import reach, unit_layers

from symcomp.spec.model import CustomGroup
from symcomp.symmetry.catalogue.attention import qk_dimension
from symcomp.symmetry.catalogue.base import (
    _SLICED,
    SIZE_SYMBOLS,
    GroupInfo,
    L,
    Symmetries,
    d,
    f,
    g,
    h,
    k,
    r,
)


def _algebra_dimension(group: CustomGroup, n: sympy.Expr) -> sympy.Expr:
    """The Lie algebra dimension of one unit of a declared group of size n."""
    rope = "rope" in group.commutes_with
    if group.group == "permutation":
        return sympy.Integer(0)
    if group.group in ("scaling", "translation"):
        return n - r if rope and group.group == "translation" else n
    if rope:
        return qk_dimension(True).subs(k, n)
    if group.group == "GL":
        return n**2 - n if group.fixes else n**2  # 1 X = 0: n constraints
    m = n - 1 if group.fixes else n
    return m * (m - 1) / 2


def custom_group_info(group: CustomGroup, arch_layers: int) -> GroupInfo:
    """A group declared in the spec, with its dimension as a closed form in the sizes."""
    from symcomp.lang import parse_expr
    from symcomp.lang.sympy_printer import to_sympy

    n = (
        group.size
        if isinstance(group.size, int)
        else to_sympy(parse_expr(group.size), SIZE_SYMBOLS)
    )
    n = sympy.sympify(n)
    if isinstance(n, sympy.MatrixBase):
        n = n[0, 0]
    # units: the layers where every relative reference (layers.{i+1}.x) exists
    span = reach([t + " " + x for t, x in group.acts.items()])
    if group.layers is None:
        layers = L - (span[1] - span[0])
    else:
        layers = sympy.Integer(len(unit_layers(group.layers, span, arch_layers)))
    units = {
        "model": sympy.Integer(1),
        "layer": layers,
        "kv_head": layers * g,
        "head": layers * h,
        "neuron": layers * f,
    }[group.per]
    return GroupInfo(
        group.name,
        "custom",
        group,
        ", ".join(group.acts),
        group.per.replace("_", " "),
        sympy.expand(_algebra_dimension(group, n)),
        units,
        "as declared",
        "not derived for custom groups",
        "the joint least-squares projection",
    )


def select_groups(syms: Symmetries, wanted: list[str | CustomGroup], layers: int) -> Symmetries:
    """The groups a spec lists instead of ``auto``: catalogue names pick the derived groups of
    that name (none if the graph does not admit it), custom groups are taken as declared."""
    chosen: list[GroupInfo] = []
    for item in wanted:
        if isinstance(item, CustomGroup):
            chosen.append(custom_group_info(item, layers))
        else:
            chosen += [gi for gi in syms.groups if gi.name == item]
    unread = syms.unread if "unread_parameters" in wanted else ()
    return Symmetries(tuple(chosen), unread)


# --- actions as SymPy expressions -------------------------------------------------------------


def _symbolic_shape(path: str, per: str) -> tuple[sympy.Expr, sympy.Expr]:
    local = path.rsplit(".", 1)[-1]
    if local in _SLICED:
        whole, sliced = _SLICED[local]
        head_sliced = per in ("kv_head", "head") and local[-1] in "QKVO"
        neuron_sliced = per == "neuron" and local in ("W_up", "W_gate", "b_up", "b_gate", "W_down")
        return sliced if head_sliced or neuron_sliced else whole
    if local == "W_T":
        return (sympy.Symbol("types", positive=True, integer=True), d)
    return (sympy.Integer(1), d)  # gains, norm biases, b_O, b_down


def action_sympy(group: CustomGroup) -> dict[str, sympy.Expr]:
    """The group's action on each parameter as a SymPy matrix expression over symbolic sizes:
    parameters and the element are MatrixSymbols shaped in d, h, g, k, f, V, T."""
    from symcomp.lang import parse_expr
    from symcomp.lang.sympy_printer import to_sympy

    size = group.size
    n = sympy.sympify(size if isinstance(size, int) else to_sympy(parse_expr(size), SIZE_SYMBOLS))
    element = (
        group.element
        or {"GL": "A", "O": "Q", "SO": "Q", "scaling": "s", "translation": "t", "permutation": "P"}[
            group.group
        ]
    )
    square = group.group in ("GL", "O", "SO", "permutation")
    symbols: dict[str, object] = {
        **SIZE_SYMBOLS,
        element: sympy.MatrixSymbol(element, n if square else 1, n),
    }
    out = {}
    done: dict[tuple[str, str, tuple[sympy.Expr, sympy.Expr]], sympy.Expr] = {}
    for path, text in group.acts.items():
        own = path.rsplit(".", 1)[-1]
        key = (text, own, _symbolic_shape(path, group.per))
        if key in done:  # the same action on a parameter of the same shape (each expert's)
            out[path] = done[key]
            continue
        expr = parse_expr(text)
        for name in sorted(_names(expr)):
            if name not in symbols:
                rows, cols = _symbolic_shape(name, group.per if "." not in name else "model")
                symbols[name] = sympy.MatrixSymbol(
                    name.replace(".", "_").replace("*", "i"), rows, cols
                )
        rows, cols = _symbolic_shape(path, group.per)
        symbols[own] = sympy.MatrixSymbol(own, rows, cols)
        out[path] = done[key] = to_sympy(expr, symbols)
    return out


def _names(expr) -> set[str]:
    from symcomp.lang import free_names

    return set(free_names(expr))
