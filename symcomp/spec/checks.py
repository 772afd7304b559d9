"""Consistency rules that relate several keys of a spec.

Each rule is a small function that yields :class:`Problem` objects pointing at the key to fix;
:func:`check_consistency` runs them all and raises one :class:`SpecError` listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from symcomp.errors import KeyPath, Problem, SpecError
from symcomp.spec.model import (
    GATED_SHORTHANDS,
    LearnedPositions,
    RotaryPositions,
    SinusoidalPositions,
    Spec,
)
from symcomp.spec.source import Source

Rule = Callable[[Spec, Source], Iterator[Problem]]
ARCH = ("architecture",)


def _problem(source: Source, message: str, path: KeyPath, **kw: str) -> Problem:
    return source.error(message, path, **kw).first


def heads_divide_width(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    att = arch.attention
    if att.head_width is None and arch.width % att.heads:
        yield _problem(
            source,
            "heads must divide width when head_width is not given",
            (*ARCH, "attention", "heads"),
            found=f"width {arch.width}, heads {att.heads}",
            accepted="a divisor of width, or an explicit attention.head_width",
        )


def kv_heads_divide_heads(spec: Spec, source: Source) -> Iterator[Problem]:
    att = spec.architecture.attention
    if att.heads % att.kv_heads:
        yield _problem(
            source,
            "kv_heads must divide heads (each key/value head serves a whole group)",
            (*ARCH, "attention", "kv_heads"),
            found=f"heads {att.heads}, kv_heads {att.kv_heads}",
            accepted="a divisor of heads",
        )


def rotated_width_even(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    pos = arch.positions
    if not isinstance(pos, RotaryPositions):
        return
    att = arch.attention
    k = att.head_width if att.head_width is not None else arch.width // att.heads
    r = int(k * pos.rotated_fraction)
    if r < 2 or r % 2:
        yield _problem(
            source,
            "the rotated width int(head_width * rotated_fraction) must be even and at least 2",
            (*ARCH, "positions", "rotated_fraction"),
            found=f"head_width {k} * {pos.rotated_fraction} -> {r}",
            accepted="a fraction giving an even number of rotated dims",
        )


def nope_layers_valid(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    pos = arch.positions
    if not isinstance(pos, RotaryPositions) or not pos.nope_layers:
        return
    layers = pos.nope_layers
    if layers != sorted(set(layers)) or layers[-1] >= arch.layers:
        yield _problem(
            source,
            "nope_layers must be increasing layer indices below layers",
            (*ARCH, "positions", "nope_layers"),
            found=str(layers),
            accepted=f"increasing indices in 0 .. {arch.layers - 1}",
        )


def padding_positions_valid(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    pos = arch.positions
    if not isinstance(pos, LearnedPositions) or pos.padding_token is None:
        return
    if pos.offset < 1:
        yield _problem(
            source,
            "positions counted over non-padding tokens need offset >= 1 (padding reads row "
            "offset - 1)",
            (*ARCH, "positions", "offset"),
            found=str(pos.offset),
            accepted="an offset of at least 1 (RoBERTa: padding_token + 1)",
        )
    if pos.padding_token >= arch.vocab_size:
        yield _problem(
            source,
            "the padding token is not in the vocabulary",
            (*ARCH, "positions", "padding_token"),
            found=str(pos.padding_token),
            accepted=f"a token id below vocab_size {arch.vocab_size}",
        )


def sinusoid_width(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    if isinstance(arch.positions, SinusoidalPositions) and arch.width < 4:
        yield _problem(
            source,
            "sinusoidal positions need width // 2 - 1 > 0 (the frequencies divide by it)",
            (*ARCH, "width"),
            found=str(arch.width),
            accepted="a width of at least 4",
        )


def gated_shorthand_consistent(spec: Spec, source: Source) -> Iterator[Problem]:
    mlp = spec.architecture.mlp
    if mlp.activation in GATED_SHORTHANDS:
        yield _problem(
            source,
            f"{mlp.activation} is a gated activation, but gated is false",
            (*ARCH, "mlp", "gated"),
            found="gated: false",
            accepted=f"gated: true (or omit it), or activation: {GATED_SHORTHANDS[mlp.activation]}",
        )


def experts_top_k_fits(spec: Spec, source: Source) -> Iterator[Problem]:
    experts = spec.architecture.mlp.experts
    if experts is not None and experts.top_k > experts.count:
        yield _problem(
            source,
            "top_k cannot exceed the number of experts",
            (*ARCH, "mlp", "experts", "top_k"),
            found=f"top_k {experts.top_k}, count {experts.count}",
            accepted=f"1 .. {experts.count}",
        )
    elif experts is not None and experts.top_k == 1 and experts.normalize and experts.count > 1:
        # one weight renormalized is 1: the router acts only through its argmax, a piecewise
        # constant function whose every small move looks like a symmetry to the Jacobian
        yield _problem(
            source,
            "a router with top_k 1 and normalize is read only through its argmax, which is "
            "not differentiable: symcomp does not count the symmetries of such a router",
            (*ARCH, "mlp", "experts", "top_k"),
            found="top_k 1, normalize true",
            accepted="top_k of 2 or more, or normalize: false (the weight is the probability)",
        )


def embedding_scale_valid(spec: Spec, source: Source) -> Iterator[Problem]:
    from symcomp.lang import ExprError
    from symcomp.spec.params import evaluate_size_expression

    scale = spec.architecture.embeddings.scale
    path = (*ARCH, "embeddings", "scale")
    try:
        value = evaluate_size_expression(scale, spec.architecture)
    except ExprError as exc:
        yield _problem(source, exc.message, path, found=repr(scale), accepted=exc.accepted)
        return
    if not value > 0:
        yield _problem(source, "the embedding scale must be positive", path, found=str(value))


def qk_norm_without_bias(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    if arch.attention.qk_norm is not None and arch.norm.bias:
        yield _problem(
            source,
            "a QK-norm has no bias: the model's norm must not have one",
            (*ARCH, "attention", "qk_norm"),
            found=f"qk_norm {arch.attention.qk_norm}, norm.bias true",
            accepted="norm.bias: false, or qk_norm: null",
        )


def sliding_layers_valid(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    layers = arch.attention.sliding_layers
    if layers is None:
        return
    path = (*ARCH, "attention", "sliding_layers")
    if arch.attention.sliding_window is None:
        yield _problem(
            source,
            "sliding_layers needs a sliding_window",
            path,
            found=str(layers),
            accepted="null, or a sliding_window",
        )
    bad = [i for i in layers if i >= arch.layers]
    if bad or len(set(layers)) != len(layers):
        yield _problem(
            source,
            "sliding_layers must list distinct layer indices below layers",
            path,
            found=str(layers),
            accepted=f"distinct indices 0 .. {arch.layers - 1}",
        )


# symcomp's graph holds every block, and every expert of every block: the analysis walks it,
# so its size bounds the time of every command. The deepest published models have about 128.
MAX_BLOCKS = 2048


def graph_size_bounded(spec: Spec, source: Source) -> Iterator[Problem]:
    arch = spec.architecture
    experts = arch.mlp.experts
    blocks = arch.layers * (experts.count if experts is not None else 1)
    if blocks > MAX_BLOCKS:
        path = (*ARCH, "layers") if experts is None else (*ARCH, "mlp", "experts", "count")
        found = f"{arch.layers} layers" + (f" x {experts.count} experts" if experts else "")
        yield _problem(
            source,
            "too many blocks: symcomp's graph holds every layer (and every expert of each)",
            path,
            found=found,
            accepted=f"layers x experts at most {MAX_BLOCKS}",
        )


def symmetries_valid(spec: Spec, source: Source) -> Iterator[Problem]:
    from symcomp.spec.groups import check_custom_groups

    yield from check_custom_groups(spec, source)


# Rules on the sizes; they run before the defaults are filled in.
ARCHITECTURE_RULES: tuple[Rule, ...] = (
    graph_size_bounded,
    heads_divide_width,
    kv_heads_divide_heads,
    rotated_width_even,
    sinusoid_width,
    nope_layers_valid,
    padding_positions_valid,
    gated_shorthand_consistent,
    qk_norm_without_bias,
    sliding_layers_valid,
    experts_top_k_fits,
)
# Rules that evaluate expressions over the sizes; they run on the normalized spec.
EXPRESSION_RULES: tuple[Rule, ...] = (embedding_scale_valid, symmetries_valid)


def run_rules(rules: tuple[Rule, ...], spec: Spec, source: Source) -> None:
    """Run the rules; raise one SpecError carrying every problem found."""
    problems = [p for rule in rules for p in rule(spec, source)]
    if problems:
        raise SpecError(problems)
