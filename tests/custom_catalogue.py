"""Every group of the design note's catalogue, re-declared as custom groups on a tiny spec.

``CUSTOM_CATALOGUE`` maps an id (A1 ... C3, with variants) to the tiny spec it is written for
(a file of ``specs/tiny``) and the YAML list of its custom groups. Later stages verify each one
numerically; :func:`spec_text` and :func:`load_custom` build the full spec.

Restrictions of a group are declared, not spelled out in coordinates: ``commutes_with: [rope]``
(A1 under RoPE; A2 on a partial-rotary model, where only the non-rotated dims may shift),
``fixes: [ones]`` (B5 on a LayerNorm stream) and ``positive: true`` (C1 under ReLU).
"""

from __future__ import annotations

from pathlib import Path

from symcomp.spec import Spec, parse_spec

TINY = Path(__file__).resolve().parents[1] / "specs" / "tiny"

_QK_GAUGE = """
- name: qk_gauge
  group: GL
  per: kv_head
  size: head_width
  acts:
    layers.*.attn.W_Q: W_Q A
    layers.*.attn.b_Q: b_Q A
    layers.*.attn.W_K: W_K A^-T
    layers.*.attn.b_K: b_K A^-T
"""

_QK_GAUGE_ROPE = """
- name: qk_gauge_rope
  group: GL
  per: kv_head
  size: head_width
  commutes_with: [rope]
  acts:
    layers.*.attn.W_Q: W_Q A
    layers.*.attn.W_K: W_K A^-T
"""

_QK_GAUGE_ROPE_BIASES = """
- name: qk_gauge_rope
  group: GL
  per: kv_head
  size: head_width
  commutes_with: [rope]
  acts:
    layers.*.attn.W_Q: W_Q A
    layers.*.attn.b_Q: b_Q A
    layers.*.attn.W_K: W_K A^-T
    layers.*.attn.b_K: b_K A^-T
"""

_KEY_BIAS_SHIFT = """
- name: key_bias_shift
  group: translation
  per: kv_head
  size: head_width
  acts:
    layers.*.attn.b_K: b_K + t
"""

_VO_GAUGE = """
- name: vo_gauge
  group: GL
  per: kv_head
  size: head_width
  element: B
  acts:
    layers.*.attn.W_V: W_V B
    layers.*.attn.b_V: b_V B
    layers.*.attn.W_O: B^-1 W_O
"""

_VO_GAUGE_NO_BIAS = """
- name: vo_gauge
  group: GL
  per: kv_head
  size: head_width
  element: B
  acts:
    layers.*.attn.W_V: W_V B
    layers.*.attn.W_O: B^-1 W_O
"""

# W_O in b_O's action stands for the sum of the blocks of the heads the kv head serves.
_VALUE_BIAS_FOLD = """
- name: value_bias_fold
  group: translation
  per: kv_head
  size: head_width
  acts:
    layers.*.attn.b_V: b_V + t
    layers.*.attn.b_O: b_O - t W_O
"""

_HEAD_PERMUTATION = """
- name: head_permutation
  group: permutation
  per: layer
  size: heads
  acts:
    layers.*.attn.W_Q: W_Q kron(P, eye(head_width))
    layers.*.attn.b_Q: b_Q kron(P, eye(head_width))
    layers.*.attn.W_K: W_K kron(P, eye(head_width))
    layers.*.attn.b_K: b_K kron(P, eye(head_width))
    layers.*.attn.W_V: W_V kron(P, eye(head_width))
    layers.*.attn.b_V: b_V kron(P, eye(head_width))
    layers.*.attn.W_O: kron(P, eye(head_width))^T W_O
"""

# Grouped-query attention: permute the key/value heads, each with the query heads it serves.
_HEAD_PERMUTATION_GQA = """
- name: kv_group_permutation
  group: permutation
  per: layer
  size: kv_heads
  acts:
    layers.*.attn.W_Q: W_Q kron(P, eye(heads / kv_heads * head_width))
    layers.*.attn.W_K: W_K kron(P, eye(head_width))
    layers.*.attn.W_V: W_V kron(P, eye(head_width))
    layers.*.attn.W_O: kron(P, eye(heads / kv_heads * head_width))^T W_O
"""

# A LayerNorm with a bias scales its bias with its gain, so that its readers see x s.
_NORM_GAIN_SCALING_LN = """
- name: attn_norm_gain_scaling
  group: scaling
  per: layer
  size: width
  acts:
    layers.*.attn_norm.gain: gain * s
    layers.*.attn_norm.bias: bias * s
    layers.*.attn.W_Q: diag(s)^-1 W_Q
    layers.*.attn.W_K: diag(s)^-1 W_K
    layers.*.attn.W_V: diag(s)^-1 W_V
"""

_NORM_GAIN_SCALING_RMS = """
- name: attn_norm_gain_scaling
  group: scaling
  per: layer
  size: width
  acts:
    layers.*.attn_norm.gain: gain * s
    layers.*.attn.W_Q: diag(s)^-1 W_Q
    layers.*.attn.W_K: diag(s)^-1 W_K
    layers.*.attn.W_V: diag(s)^-1 W_V
- name: mlp_norm_gain_scaling
  group: scaling
  per: layer
  size: width
  acts:
    layers.*.mlp_norm.gain: gain * s
    layers.*.mlp.W_up: diag(s)^-1 W_up
    layers.*.mlp.W_gate: diag(s)^-1 W_gate
- name: final_norm_gain_scaling
  group: scaling
  per: model
  size: width
  acts:
    final_norm.gain: gain * s
    unembed.W_U: diag(s)^-1 W_U
"""

# Gemma stores the gain as w with the norm multiplying by 1 + w.
_NORM_GAIN_SCALING_ONE_PLUS_W = """
- name: attn_norm_gain_scaling
  group: scaling
  per: layer
  size: width
  acts:
    layers.*.attn_norm.gain: (gain + 1) * s - 1
    layers.*.attn.W_Q: diag(s)^-1 W_Q
    layers.*.attn.W_K: diag(s)^-1 W_K
    layers.*.attn.W_V: diag(s)^-1 W_V
"""

_NORM_BIAS_FOLD = """
- name: attn_norm_bias_fold
  group: translation
  per: layer
  size: width
  acts:
    layers.*.attn_norm.bias: bias + t
    layers.*.attn.b_Q: b_Q - t W_Q
    layers.*.attn.b_K: b_K - t W_K
    layers.*.attn.b_V: b_V - t W_V
"""


def _reader_centering(name: str, norm: str, weight: str, bias: str, size: str) -> str:
    # diag(gain) W -> diag(gain) W + 1 w^T; the reader bias absorbs the constant bias W term.
    lift = f"diag({norm}.gain)^-1 ones(width)^T w"
    return f"""
- name: {name}
  group: translation
  per: layer
  size: {size}
  element: w
  acts:
    layers.*.{weight}: {weight.split(".")[1]} + {lift}
    layers.*.{bias}: {bias.split(".")[1]} - {norm}.bias {lift}
"""


_READER_CENTERING = (
    _reader_centering("center_W_Q", "attn_norm", "attn.W_Q", "attn.b_Q", "heads * head_width")
    + _reader_centering("center_W_K", "attn_norm", "attn.W_K", "attn.b_K", "kv_heads * head_width")
    + _reader_centering("center_W_V", "attn_norm", "attn.W_V", "attn.b_V", "kv_heads * head_width")
    + _reader_centering("center_W_up", "mlp_norm", "mlp.W_up", "mlp.b_up", "hidden")
)

# Tied embeddings: the embedding rows may only move together (one uniform shift).
_WRITER_CENTERING = """
- name: center_positions
  group: translation
  per: model
  size: positions
  element: c
  acts:
    embed.W_P: W_P + c^T ones(width)
- name: center_embedding
  group: translation
  per: model
  size: 1
  element: c
  acts:
    embed.W_E: W_E + c ones(vocab)^T ones(width)
- name: center_attn_out
  group: translation
  per: layer
  size: heads * head_width
  element: c
  acts:
    layers.*.attn.W_O: W_O + c^T ones(width)
- name: center_attn_out_bias
  group: translation
  per: layer
  size: 1
  element: c
  acts:
    layers.*.attn.b_O: b_O + c ones(width)
- name: center_mlp_out
  group: translation
  per: layer
  size: hidden
  element: c
  acts:
    layers.*.mlp.W_down: W_down + c^T ones(width)
- name: center_mlp_out_bias
  group: translation
  per: layer
  size: 1
  element: c
  acts:
    layers.*.mlp.b_down: b_down + c ones(width)
"""

_RESIDUAL_ROTATION = """
- name: residual_rotation
  group: O
  per: model
  size: width
  acts:
    embed.W_E: W_E Q
    layers.*.attn.W_O: W_O Q
    layers.*.mlp.W_down: W_down Q
    layers.*.attn.W_Q: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_Q
    layers.*.attn.W_K: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_K
    layers.*.attn.W_V: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_V
    layers.*.mlp.W_up: diag(mlp_norm.gain)^-1 Q^T diag(mlp_norm.gain) W_up
    layers.*.mlp.W_gate: diag(mlp_norm.gain)^-1 Q^T diag(mlp_norm.gain) W_gate
    unembed.W_U: diag(final_norm.gain)^-1 Q^T diag(final_norm.gain) W_U
"""

# B5 on a LayerNorm stream (tiny pythia: parallel block, two norms, untied): O(d) fixing 1. The
# norm biases rotate too: a reader sees beta W, and its weight became diag(g)^-1 Q^T diag(g) W.
_RESIDUAL_ROTATION_LAYERNORM = """
- name: residual_rotation
  group: O
  per: model
  size: width
  fixes: [ones]
  acts:
    embed.W_E: W_E Q
    layers.*.attn.W_O: W_O Q
    layers.*.attn.b_O: b_O Q
    layers.*.mlp.W_down: W_down Q
    layers.*.mlp.b_down: b_down Q
    layers.*.attn.W_Q: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_Q
    layers.*.attn.W_K: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_K
    layers.*.attn.W_V: diag(attn_norm.gain)^-1 Q^T diag(attn_norm.gain) W_V
    layers.*.mlp.W_up: diag(mlp_norm.gain)^-1 Q^T diag(mlp_norm.gain) W_up
    unembed.W_U: diag(final_norm.gain)^-1 Q^T diag(final_norm.gain) W_U
    layers.*.attn_norm.bias: bias diag(gain)^-1 Q diag(gain)
    layers.*.mlp_norm.bias: bias diag(gain)^-1 Q diag(gain)
    final_norm.bias: bias diag(gain)^-1 Q diag(gain)
"""

# A2 on a partial-rotary model (tiny pythia, key biases): only what every rotation fixes shifts.
_KEY_BIAS_SHIFT_PARTIAL_ROTARY = """
- name: key_bias_shift
  group: translation
  per: kv_head
  size: head_width
  commutes_with: [rope]
  acts:
    layers.*.attn.b_K: b_K + t
"""

_EMBEDDING_TRANSLATION = """
- name: embedding_translation
  group: translation
  per: model
  size: width
  acts:
    embed.W_E: W_E + ones(vocab)^T t
    embed.W_P: W_P - ones(positions)^T t
"""

_UNEMBEDDING_SHIFT = """
- name: unembedding_shift
  group: translation
  per: model
  size: width
  element: u
  acts:
    unembed.W_U: W_U + u^T ones(vocab)
- name: unembedding_bias_shift
  group: translation
  per: model
  size: 1
  element: c
  acts:
    unembed.b_U: b_U + c ones(vocab)
"""

_RELU_SCALING = """
- name: relu_scaling
  group: scaling
  per: neuron
  size: 1
  positive: true
  acts:
    layers.*.mlp.W_up: W_up s
    layers.*.mlp.b_up: b_up s
    layers.*.mlp.W_down: s^-1 W_down
"""

_RELU_SCALING_PER_LAYER = """
- name: relu_scaling
  group: scaling
  per: layer
  size: hidden
  positive: true
  acts:
    layers.*.mlp.W_up: W_up diag(s)
    layers.*.mlp.b_up: b_up diag(s)
    layers.*.mlp.W_down: diag(s)^-1 W_down
"""

_GATED_SCALING = """
- name: gated_scaling
  group: scaling
  per: neuron
  size: 1
  acts:
    layers.*.mlp.W_up: W_up s
    layers.*.mlp.W_down: s^-1 W_down
"""

_NEURON_PERMUTATION = """
- name: neuron_permutation
  group: permutation
  per: layer
  size: hidden
  acts:
    layers.*.mlp.W_up: W_up P
    layers.*.mlp.b_up: b_up P
    layers.*.mlp.W_down: P^T W_down
"""

# id -> (tiny spec file, YAML list of custom groups)

# A false claim (the first seed summary's): linearly mixing attention heads is no symmetry; only
# permutations are (A5). Tests check that it is rejected with its measured error.
HEAD_MIXING = """
- name: head_mixing
  group: GL
  per: layer
  size: heads * head_width
  acts:
    layers.*.attn.W_Q: W_Q A
    layers.*.attn.b_Q: b_Q A
    layers.*.attn.W_K: W_K A^-T
    layers.*.attn.b_K: b_K A^-T
"""

CUSTOM_CATALOGUE: dict[str, tuple[str, str]] = {
    "A1": ("gpt2.yaml", _QK_GAUGE),
    "A1'": ("llama.yaml", _QK_GAUGE_ROPE),
    "A1'_gqa": ("qwen2.yaml", _QK_GAUGE_ROPE_BIASES),
    "A1'_mqa": ("gemma.yaml", _QK_GAUGE_ROPE),
    "A2": ("gpt2.yaml", _KEY_BIAS_SHIFT),
    "A2_partial_rotary": ("pythia.yaml", _KEY_BIAS_SHIFT_PARTIAL_ROTARY),
    "A3": ("gpt2.yaml", _VO_GAUGE),
    "A3_gqa": ("mistral.yaml", _VO_GAUGE_NO_BIAS),
    "A4": ("gpt2.yaml", _VALUE_BIAS_FOLD),
    "A5": ("gpt2.yaml", _HEAD_PERMUTATION),
    "A5_gqa": ("mistral.yaml", _HEAD_PERMUTATION_GQA),
    "B1": ("gpt2.yaml", _NORM_GAIN_SCALING_LN),
    "B1_rms": ("llama.yaml", _NORM_GAIN_SCALING_RMS),
    "B1_one_plus_w": ("gemma.yaml", _NORM_GAIN_SCALING_ONE_PLUS_W),
    "B2": ("gpt2.yaml", _NORM_BIAS_FOLD),
    "B3": ("gpt2.yaml", _READER_CENTERING),
    "B4": ("gpt2.yaml", _WRITER_CENTERING),
    "B5": ("llama.yaml", _RESIDUAL_ROTATION),
    "B5_layernorm": ("pythia.yaml", _RESIDUAL_ROTATION_LAYERNORM),
    "B6": ("gpt2.yaml", _EMBEDDING_TRANSLATION),
    "B7": ("phi.yaml", _UNEMBEDDING_SHIFT),
    "C1": ("opt.yaml", _RELU_SCALING),
    "C1_per_layer": ("opt.yaml", _RELU_SCALING_PER_LAYER),
    "C2": ("llama.yaml", _GATED_SCALING),
    "C3": ("gpt2.yaml", _NEURON_PERMUTATION),
}


def spec_text(group_id: str) -> str:
    """The tiny spec of ``group_id`` with its custom groups as the symmetries list."""
    spec_file, groups = CUSTOM_CATALOGUE[group_id]
    base = (TINY / spec_file).read_text(encoding="utf-8")
    return base.rstrip("\n") + "\nsymmetries:" + groups


def load_custom(group_id: str) -> Spec:
    return parse_spec(spec_text(group_id), file=f"custom:{group_id}")
