"""A one-screen, human-readable summary of a spec (what ``symcomp check`` prints)."""

from __future__ import annotations

from dataclasses import dataclass

from symcomp.spec.model import (
    CustomGroup,
    LearnedPositions,
    RotaryPositions,
    SinusoidalPositions,
    Spec,
)
from symcomp.spec.params import parameter_count, sizes_of


@dataclass(frozen=True)
class SpecSummary:
    """The facts ``check`` reports, as plain data (also its ``--json`` output)."""

    name: str
    rows: tuple[tuple[str, str], ...]
    parameters: int
    symmetries: tuple[str, ...]


def _positions(spec: Spec) -> str:
    pos = spec.architecture.positions
    if isinstance(pos, LearnedPositions):
        return "learned" + (f", offset {pos.offset} (unread rows)" if pos.offset else "")
    if isinstance(pos, RotaryPositions):
        r = sizes_of(spec.architecture).rotary_width
        k = spec.architecture.attention.head_width
        text = f"RoPE base {pos.base:g}, {pos.pair_layout}, {r} of {k} dims rotated"
        return text + (f", linear scaling x{pos.scaling.factor:g}" if pos.scaling else "")
    if isinstance(pos, SinusoidalPositions):
        return f"sinusoidal (fixed), base {pos.base:g}" + (
            f", offset {pos.offset}" if pos.offset else ""
        )
    return pos.type


def _attention(spec: Spec) -> str:
    att = spec.architecture.attention
    biases = [n for n in "qkvo" if getattr(att.bias, n)]
    text = f"{att.heads} heads, {att.kv_heads} kv heads, head width {att.head_width}"
    text += f", bias on {','.join(biases)}" if biases else ", no biases"
    return text + (f", sliding window {att.sliding_window}" if att.sliding_window else "")


def _norm(spec: Spec) -> str:
    arch = spec.architecture
    n = arch.norm
    extras = [
        name
        for name, on in (("embedding norm", arch.embedding_norm), ("final norm", arch.final_norm))
        if on
    ]
    text = f"{n.type}, eps {n.eps:g}, {'with' if n.bias else 'no'} bias, gain {n.gain}"
    return text + ("; " + ", ".join(extras) if extras else "")


def _embeddings(spec: Spec) -> str:
    emb = spec.architecture.embeddings
    parts = ["tied" if emb.tied else "untied"]
    if emb.unembedding_bias:
        parts.append("unembedding bias")
    if emb.scale != 1.0:
        parts.append(f"scale {emb.scale}")
    if emb.token_types:
        parts.append(f"{emb.token_types} token types")
    return ", ".join(parts)


def _symmetries(spec: Spec) -> tuple[str, ...]:
    if spec.symmetries == "auto":
        return ("auto (derive every exact symmetry)",)
    return tuple(
        f"{item.name} (custom {item.group} per {item.per})"
        if isinstance(item, CustomGroup)
        else item
        for item in spec.symmetries
    )


def summarize(spec: Spec) -> SpecSummary:
    arch = spec.architecture
    mlp = arch.mlp
    rows = (
        ("kind", arch.kind),
        (
            "sizes",
            f"V={arch.vocab_size}, T={arch.max_positions}, d={arch.width}, "
            f"L={arch.layers}, f={mlp.hidden}",
        ),
        ("block", arch.block),
        ("norm", _norm(spec)),
        ("attention", _attention(spec)),
        ("positions", _positions(spec)),
        (
            "mlp",
            f"{'gated ' if mlp.gated else ''}{mlp.activation}, "
            f"{'with' if mlp.bias else 'no'} biases"
            + (
                f"; {mlp.experts.count} experts, top {mlp.experts.top_k}"
                + (" renormalized" if mlp.experts.normalize else "")
                if mlp.experts
                else ""
            ),
        ),
        ("embeddings", _embeddings(spec)),
    )
    if arch.prediction_head is not None:
        rows += (("prediction head", f"dense + {arch.prediction_head.activation} + norm"),)
    return SpecSummary(spec.name, rows, parameter_count(arch), _symmetries(spec))
