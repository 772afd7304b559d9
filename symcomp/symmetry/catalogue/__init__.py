"""``derive_groups(graph) -> Symmetries``: the named symmetry groups a graph admits.

Each rule reads the graph (which norms feed which linear maps, what the residual stream's
readers are, which parameters are tied, which tables are added, which activations are positively
homogeneous) and, where its condition holds, writes the group in the spec language as a
:class:`CustomGroup`: the same objects a user declares, so catalogue and custom groups go through
one machinery (actions, Lie algebras, vertical vectors, proofs). Each group carries its dimension
per unit as a SymPy expression in the symbolic sizes, so totals are closed forms.

One module per class of symmetry, each with its rules, the reason each holds, and its worked
counts (``WORKED``: declared, checked by tests/test_catalogue.py, never read here):

- :mod:`.attention`: A1-A5, the QK and VO gauges, the key-bias shift, the value-bias fold, head
  permutations;
- :mod:`.norms`: B1-B3, a norm's gain and bias against its readers, LayerNorm reader centring;
- :mod:`.stream`: B4, B5, B8, the residual stream's writers against its norms;
- :mod:`.embeddings`: B6, B7, the tables at either end;
- :mod:`.mlp`: C1-C4, per-neuron scales and permutations (per expert of a mixture), the
  router's shift;
- :mod:`.unread`: rows no input reads;
- :mod:`.custom`: groups as a spec declares them, and actions as SymPy expressions.

The rules are a naming layer, not the judge: the linear system of :mod:`..linear_system` counts
every symmetry the graph's local rules allow, and the analysis reports whatever of that count the
named groups leave unexplained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from symcomp.ir.graph import Graph
from symcomp.symmetry.catalogue import attention, embeddings, mlp, norms, stream, unread
from symcomp.symmetry.catalogue.attention import (
    head_permutation,
    key_bias_shift,
    qk_dimension,
    qk_gauge,
    rope_pair_commutant_dims,
    value_bias_centering,
    value_bias_fold,
    vo_gauge,
)
from symcomp.symmetry.catalogue.base import (
    SIZE_SYMBOLS,
    GroupInfo,
    L,
    Symmetries,
    T,
    UnreadRows,
    V,
    Worked,
    d,
    f,
    g,
    h,
    k,
    r,
)
from symcomp.symmetry.catalogue.custom import action_sympy, custom_group_info, select_groups
from symcomp.symmetry.catalogue.embeddings import (
    embedding_translation,
    padding_translation,
    unembedding_shift,
)
from symcomp.symmetry.catalogue.facts import Facts
from symcomp.symmetry.catalogue.mlp import mlp_scaling, neuron_permutation, router_shift
from symcomp.symmetry.catalogue.norms import (
    norm_bias_centering,
    norm_bias_fold,
    norm_bias_shift_through_writers,
    norm_gain_scaling,
    reader_centering,
)
from symcomp.symmetry.catalogue.stream import (
    residual_rotation,
    writer_bias_transfer,
    writer_centering,
)
from symcomp.symmetry.catalogue.unread import unread_rows

Rule = Callable[[Facts], Iterator[GroupInfo]]

# Every rule, in the order of the report: the groups of a graph come out in this order.
RULES: list[Rule] = [
    qk_gauge,
    key_bias_shift,
    vo_gauge,
    value_bias_fold,
    value_bias_centering,
    norm_gain_scaling,
    norm_bias_shift_through_writers,
    norm_bias_fold,
    reader_centering,
    norm_bias_centering,
    writer_centering,
    residual_rotation,
    embedding_translation,
    padding_translation,
    unembedding_shift,
    mlp_scaling,
    router_shift,
    head_permutation,
    neuron_permutation,
    writer_bias_transfer,
]

# The modules of the catalogue, each with its WORKED counts.
MODULES = (attention, norms, stream, embeddings, mlp, unread)


def rule(fn: Rule) -> Rule:
    """Register one more rule; its groups come after those of the rules above."""
    RULES.append(fn)
    return fn


def derive_groups(graph: Graph) -> Symmetries:
    """Every named group the rules find in ``graph``, and the unread parameters."""
    facts = Facts(graph)
    groups = tuple(info for rule_fn in RULES for info in rule_fn(facts))
    return Symmetries(groups, tuple(unread_rows(facts)))


__all__ = [
    "MODULES",
    "RULES",
    "SIZE_SYMBOLS",
    "Facts",
    "GroupInfo",
    "L",
    "Rule",
    "Symmetries",
    "T",
    "UnreadRows",
    "V",
    "Worked",
    "action_sympy",
    "custom_group_info",
    "d",
    "derive_groups",
    "embedding_translation",
    "f",
    "g",
    "h",
    "head_permutation",
    "k",
    "key_bias_shift",
    "mlp_scaling",
    "neuron_permutation",
    "norm_bias_centering",
    "norm_bias_fold",
    "norm_bias_shift_through_writers",
    "norm_gain_scaling",
    "padding_translation",
    "qk_dimension",
    "qk_gauge",
    "r",
    "reader_centering",
    "residual_rotation",
    "rope_pair_commutant_dims",
    "router_shift",
    "rule",
    "select_groups",
    "unembedding_shift",
    "unread_rows",
    "value_bias_centering",
    "value_bias_fold",
    "vo_gauge",
    "writer_bias_transfer",
    "writer_centering",
]
