"""``HF_NAMES`` of the generated ``model.py``: our parameter names -> a transformers
family's state-dict names, for the parameters this spec has."""

from __future__ import annotations

from dataclasses import dataclass

from symcomp.codegen.model_text import LINE_LENGTH
from symcomp.spec.model import Spec
from symcomp.spec.params import layer_parameter_shapes, parameter_shapes

HF_TRANSFORM_NOTES = {
    "copy": "",
    "transpose": "transposed",
    "qkv_cols": "{part} columns of the fused [q | k | v]",
    "qkv_per_head": "{part} rows of the fused per-head [q, k, v]",
    "qkv_per_head_T": "{part} rows of the fused per-head [q, k, v], transposed",
    "experts_gate_up": "{part} (half.expert) of the fused experts' gate_up_proj, transposed",
    "experts_down": "expert of the fused experts' down_proj ({part}), transposed",
    "qkv_rows": "{part} rows of the fused [q | k | v]",
    "qkv_rows_T": "{part} rows of the fused [q | k | v], transposed",
    "qkv_grouped": "{part} rows of the fused per-kv-head [q.., k, v]",
    "qkv_grouped_T": "{part} rows of the fused per-kv-head [q.., k, v], transposed",
    "gate_up": "{part} half of the fused [gate | up]",
    "gate_up_T": "{part} half of the fused [gate | up], transposed",
}


@dataclass(frozen=True)
class HFRow:
    ours: str
    hf: str
    note: str  # a comment, or ""
    trailing: bool  # the comment fits after the entry (else it goes on the line above)


@dataclass(frozen=True)
class HFTable:
    model_type: str
    rows: tuple[HFRow, ...]


def hf_table(spec: Spec, model_type: str) -> HFTable:
    """Our parameter names -> transformers names (patterns with ``{i}``), for this spec."""
    from symcomp.hf.weights import hf_name_table  # imports torch: only when asked for

    arch = spec.architecture
    top = [name for name in parameter_shapes(arch) if not name.startswith("layers.")]
    ours = set(top) | {f"layers.{{i}}.{name}" for name in layer_parameter_shapes(arch)}
    rows: list[HFRow] = []
    experts = arch.mlp.experts
    for hf, name, transform in hf_name_table(model_type, experts.count if experts else None):
        if name not in ours or any(r.ours == name for r in rows):
            continue  # a parameter the spec lacks (a tied unembedding), or a second copy
        kind, _, part = transform.partition(".")
        note = HF_TRANSFORM_NOTES[kind].format(part=part)
        fits = len(f'    "{name}": "{hf}",  # {note}') <= LINE_LENGTH
        rows.append(HFRow(name, hf, note, fits))
    missing = sorted(ours - {r.ours for r in rows})
    assert not missing, f"no {model_type} name for {missing}"
    return HFTable(model_type, tuple(rows))
