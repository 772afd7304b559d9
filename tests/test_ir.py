"""The graph IR: its structure, and the float64 interpreter against Hugging Face's models.

Parameters come from ``symcomp.hf.weights.from_hf_state_dict`` when it exists; until then (and
for the extra families) from the minimal name tables ``_TOP`` and ``_LAYERS`` below.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import networkx as nx
import pytest
import torch
from torch import Tensor, nn

from symcomp.ir import OP_KINDS, Graph, build_graph, interpret
from symcomp.spec import load_spec, parameter_shapes
from symcomp.spec.model import LearnedPositions, RotaryPositions
from tests import hf_tiny
from tests.conftest import EXAMPLE_SPECS, TINY_SPECS
from tests.hf_tiny import FAMILIES, tiny_spec

# --- structure --------------------------------------------------------------------------------

ALL_SPECS = TINY_SPECS + EXAMPLE_SPECS


def _expected_op_count(graph: Graph) -> int:
    """Ops the builder should emit, counted from the architecture."""
    a = graph.arch
    rope = isinstance(a.positions, RotaryPositions)
    embed = 1 + (a.embeddings.scale not in (1, 1.0))
    embed += 2 * isinstance(a.positions, LearnedPositions) + 2 * bool(a.embeddings.token_types)
    embed += a.embedding_norm
    attention = 3 * 2 + 2 * rope + 3 + 1 + 1  # q,k,v + splits, ropes, scores..merge, W_O
    mlp = 2 + 1 + a.mlp.gated  # up, act or gate, down (+ W_gate)
    norms = 1 if a.block == "parallel_one_norm" else 2
    head = a.final_norm + 3 * (a.prediction_head is not None) + 2
    return embed + a.layers * (attention + mlp + norms + 2) + head


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_graph_structure(path):
    spec = load_spec(path)
    graph = build_graph(spec)
    g = graph.nx
    shapes = parameter_shapes(spec.architecture)

    # every parameter exactly once, as one node with its shape, in parameter_shapes order
    assert [p.name for p in graph.params] == list(shapes)
    assert {n for n, r in g.nodes(data="role") if r == "param"} == set(shapes)
    for p in graph.params:
        assert p.shape == shapes[p.name] == tuple(a.size for a in p.axes)
        uses = graph.uses(p.name)
        assert g.out_degree(p.name) == len(uses) >= 1
        for _, use in uses:
            assert tuple(a.size for a in use.axes) == p.shape
    tied = spec.architecture.embeddings.tied
    assert g.out_degree("embed.W_E") == (2 if tied else 1)
    if tied:  # the unembedding reads the table transposed, with the vocabulary as logits
        (embed, _), (unembed, use) = graph.uses("embed.W_E")
        assert (embed.kind, unembed.kind, unembed.attr("transpose")) == ("embed", "unembed", True)
        assert [a.name for a in use.axes] == ["vocab@logits", f"resid@{unembed.inputs[0].node}"]

    assert len(graph.ops) == _expected_op_count(graph)
    assert nx.is_directed_acyclic_graph(g) and nx.is_frozen(g)
    written = {graph.input}
    for op in graph.ops:  # in topological order; value edges carry the value's axes
        assert op.kind in OP_KINDS
        assert {i.slot for i in op.inputs} >= set(OP_KINDS[op.kind].inputs)
        assert list(g.successors(op.name)) == [op.output]
        for i in op.inputs:
            assert i.node in written or i.node in graph.param
            assert i.node in graph.param or i.axes == graph.value[i.node].axes
            assert g.edges[i.node, op.name, i.slot]["axes"] == i.axes
        written.add(op.output)
    for v in graph.values:  # one writer each, every value read (but the output)
        assert g.in_degree(v.name) == (0 if v.name == graph.input else 1)
        assert g.out_degree(v.name) >= (0 if v.name == graph.output else 1)
    json.dumps(graph.to_dict())


def test_axes_are_typed_per_kv_head():
    """GQA: the q projection's blocks name the kv head that serves each query head."""
    graph = build_graph(tiny_spec("mistral"))  # 4 heads, 2 kv heads
    (_, W_Q), (_, W_K), (_, W_O) = (graph.uses(f"layers.0.attn.W_{p}")[0] for p in "QKO")
    assert [a.name for a in W_Q.axes[1].blocks] == ["qk[0,0]", "qk[0,0]", "qk[0,1]", "qk[0,1]"]
    assert [a.name for a in W_K.axes[1].blocks] == ["qk[0,0]", "qk[0,1]"]
    assert [a.name for a in W_O.axes[0].blocks] == ["v[0,0]", "v[0,0]", "v[0,1]", "v[0,1]"]
    assert W_O.axes[1].name == "resid@L0.attn_out"
    names = {a.name for a in graph.axis_classes()}
    assert {"qk[0,0]", "qk[0,1]", "v[0,0]", "v[0,1]", "mlp[0]@gate", "mlp[0]@up"} <= names
    with pytest.raises(FrozenInstanceError):
        graph.ops = ()  # type: ignore[misc]


# --- Hugging Face parameters under our names --------------------------------------------------

# our local name -> HF local name, per family; "T:" marks an nn.Linear weight (transposed)
_LLAMA_LAYER = {
    "attn_norm.gain": "input_layernorm.weight",
    "mlp_norm.gain": "post_attention_layernorm.weight",
    **{f"attn.W_{p}": f"T:self_attn.{p.lower()}_proj.weight" for p in "QKVO"},
    **{f"attn.b_{p}": f"self_attn.{p.lower()}_proj.bias" for p in "QKV"},
    **{f"mlp.W_{n}": f"T:mlp.{n}_proj.weight" for n in ("gate", "up", "down")},
}
_BERT_QKV = (("Q", "query"), ("K", "key"), ("V", "value"))
_LAYERS: dict[str, tuple[str, dict[str, str]]] = {
    "gpt2": (
        "transformer.h",
        {
            "attn_norm.gain": "ln_1.weight", "attn_norm.bias": "ln_1.bias",
            "mlp_norm.gain": "ln_2.weight", "mlp_norm.bias": "ln_2.bias",
            "attn.W_O": "attn.c_proj.weight", "attn.b_O": "attn.c_proj.bias",
            "mlp.W_up": "mlp.c_fc.weight", "mlp.b_up": "mlp.c_fc.bias",
            "mlp.W_down": "mlp.c_proj.weight", "mlp.b_down": "mlp.c_proj.bias",
        },
    ),
    "bert": (
        "bert.encoder.layer",
        {
            **{f"attn.W_{p}": f"T:attention.self.{n}.weight" for p, n in _BERT_QKV},
            **{f"attn.b_{p}": f"attention.self.{n}.bias" for p, n in _BERT_QKV},
            "attn.W_O": "T:attention.output.dense.weight",
            "attn.b_O": "attention.output.dense.bias",
            "attn_norm.gain": "attention.output.LayerNorm.weight",
            "attn_norm.bias": "attention.output.LayerNorm.bias",
            "mlp.W_up": "T:intermediate.dense.weight", "mlp.b_up": "intermediate.dense.bias",
            "mlp.W_down": "T:output.dense.weight", "mlp.b_down": "output.dense.bias",
            "mlp_norm.gain": "output.LayerNorm.weight", "mlp_norm.bias": "output.LayerNorm.bias",
        },
    ),
    "llama": ("model.layers", _LLAMA_LAYER),
    "mistral": ("model.layers", _LLAMA_LAYER),
    "qwen2": ("model.layers", _LLAMA_LAYER),
    "gemma": ("model.layers", _LLAMA_LAYER),
    "pythia": (
        "gpt_neox.layers",
        {
            "attn_norm.gain": "input_layernorm.weight", "attn_norm.bias": "input_layernorm.bias",
            "mlp_norm.gain": "post_attention_layernorm.weight",
            "mlp_norm.bias": "post_attention_layernorm.bias",
            "attn.W_O": "T:attention.dense.weight", "attn.b_O": "attention.dense.bias",
            "mlp.W_up": "T:mlp.dense_h_to_4h.weight", "mlp.b_up": "mlp.dense_h_to_4h.bias",
            "mlp.W_down": "T:mlp.dense_4h_to_h.weight", "mlp.b_down": "mlp.dense_4h_to_h.bias",
        },
    ),
    "phi": (
        "model.layers",
        {
            "norm.gain": "input_layernorm.weight", "norm.bias": "input_layernorm.bias",
            **{f"attn.W_{p}": f"T:self_attn.{p.lower()}_proj.weight" for p in "QKV"},
            **{f"attn.b_{p}": f"self_attn.{p.lower()}_proj.bias" for p in "QKV"},
            "attn.W_O": "T:self_attn.dense.weight", "attn.b_O": "self_attn.dense.bias",
            "mlp.W_up": "T:mlp.fc1.weight", "mlp.b_up": "mlp.fc1.bias",
            "mlp.W_down": "T:mlp.fc2.weight", "mlp.b_down": "mlp.fc2.bias",
        },
    ),
    "opt": (
        "model.decoder.layers",
        {
            "attn_norm.gain": "self_attn_layer_norm.weight",
            "attn_norm.bias": "self_attn_layer_norm.bias",
            "mlp_norm.gain": "final_layer_norm.weight", "mlp_norm.bias": "final_layer_norm.bias",
            **{f"attn.W_{p}": f"T:self_attn.{p.lower()}_proj.weight" for p in "QKV"},
            **{f"attn.b_{p}": f"self_attn.{p.lower()}_proj.bias" for p in "QKV"},
            "attn.W_O": "T:self_attn.out_proj.weight", "attn.b_O": "self_attn.out_proj.bias",
            "mlp.W_up": "T:fc1.weight", "mlp.b_up": "fc1.bias",
            "mlp.W_down": "T:fc2.weight", "mlp.b_down": "fc2.bias",
        },
    ),
}  # fmt: skip
_LLAMA_TOP = {"embed.W_E": "model.embed_tokens.weight", "final_norm.gain": "model.norm.weight"}
_TOP: dict[str, dict[str, str]] = {
    "gpt2": {
        "embed.W_E": "transformer.wte.weight", "embed.W_P": "transformer.wpe.weight",
        "final_norm.gain": "transformer.ln_f.weight", "final_norm.bias": "transformer.ln_f.bias",
    },
    "bert": {
        "embed.W_E": "bert.embeddings.word_embeddings.weight",
        "embed.W_P": "bert.embeddings.position_embeddings.weight",
        "embed.W_T": "bert.embeddings.token_type_embeddings.weight",
        "embed_norm.gain": "bert.embeddings.LayerNorm.weight",
        "embed_norm.bias": "bert.embeddings.LayerNorm.bias",
        "head.W_dense": "T:cls.predictions.transform.dense.weight",
        "head.b_dense": "cls.predictions.transform.dense.bias",
        "head_norm.gain": "cls.predictions.transform.LayerNorm.weight",
        "head_norm.bias": "cls.predictions.transform.LayerNorm.bias",
        "unembed.b_U": "cls.predictions.bias",
    },
    "llama": {**_LLAMA_TOP, "unembed.W_U": "T:lm_head.weight"},
    "mistral": {**_LLAMA_TOP, "unembed.W_U": "T:lm_head.weight"},
    "qwen2": {**_LLAMA_TOP, "unembed.W_U": "T:lm_head.weight"},
    "gemma": _LLAMA_TOP,
    "pythia": {
        "embed.W_E": "gpt_neox.embed_in.weight", "unembed.W_U": "T:lm_head.weight",
        "final_norm.gain": "gpt_neox.final_layer_norm.weight",
        "final_norm.bias": "gpt_neox.final_layer_norm.bias",
    },
    "phi": {
        "embed.W_E": "model.embed_tokens.weight", "unembed.W_U": "T:lm_head.weight",
        "unembed.b_U": "lm_head.bias", "final_norm.gain": "model.final_layernorm.weight",
        "final_norm.bias": "model.final_layernorm.bias",
    },
    "opt": {
        "embed.W_E": "model.decoder.embed_tokens.weight",
        "embed.W_P": "model.decoder.embed_positions.weight",
        "final_norm.gain": "model.decoder.final_layer_norm.weight",
        "final_norm.bias": "model.decoder.final_layer_norm.bias",
    },
}  # fmt: skip


_FUSED_QKV = {
    "gpt2": "attn.c_attn",
    "pythia": "attention.query_key_value",
    "bloom": "self_attention.query_key_value",
}


def _fused_qkv(family: str, w: Tensor, b: Tensor, heads: int) -> dict[str, Tensor]:
    """Split a fused QKV projection: GPT-2 stores [Q | K | V] (in, 3d); GPT-NeoX and BLOOM store,
    per head, [q_h | k_h | v_h] as rows of a (3d, in) nn.Linear weight."""
    if family == "gpt2":
        return {**dict(zip(("W_Q", "W_K", "W_V"), w.chunk(3, 1), strict=True)),
                **dict(zip(("b_Q", "b_K", "b_V"), b.chunk(3, 0), strict=True))}  # fmt: skip
    W = w.T.reshape(w.shape[1], heads, 3, -1)  # (d, heads, q|k|v, k)
    bb = b.reshape(heads, 3, -1)
    out = {}
    for n, p in enumerate("QKV"):
        out[f"W_{p}"] = W[:, :, n].reshape(w.shape[1], -1)
        out[f"b_{p}"] = bb[:, n].reshape(-1)
    return out


def _ours_from_hf(family: str, spec, state: dict[str, Tensor]) -> dict[str, Tensor]:
    def get(prefix: str, hf: str) -> Tensor | None:
        transposed, hf = hf.startswith("T:"), hf.removeprefix("T:")
        tensor = state.get(f"{prefix}{hf}")
        return tensor.T if transposed and tensor is not None else tensor

    named = {ours: get("", hf) for ours, hf in _TOP[family].items()}
    layer_prefix, table = _LAYERS[family]
    for i in range(spec.architecture.layers):
        P = f"{layer_prefix}.{i}."
        named.update({f"layers.{i}.{ours}": get(P, hf) for ours, hf in table.items()})
        fused = _FUSED_QKV.get(family)
        if fused:
            w, b = state[f"{P}{fused}.weight"], state[f"{P}{fused}.bias"]
            qkv = _fused_qkv(family, w, b, spec.architecture.attention.heads)
            named.update({f"layers.{i}.attn.{n}": t for n, t in qkv.items()})
    return {name: t for name, t in named.items() if t is not None}  # absent biases


def _our_params(family: str, spec, model: nn.Module) -> dict[str, Tensor]:
    state = {k: v.detach() for k, v in model.state_dict().items()}
    try:
        from symcomp.hf.weights import from_hf_state_dict  # the helper's table, once it lands
    except ImportError:
        from_hf_state_dict = None
    if from_hf_state_dict is None or family not in FAMILIES:
        params = _ours_from_hf(family, spec, state)
    else:
        params = from_hf_state_dict(spec, state, FAMILIES[family])
    shapes = parameter_shapes(spec.architecture)
    assert set(params) == set(shapes), set(params) ^ set(shapes)
    assert all(tuple(params[n].shape) == shapes[n] for n in shapes)
    return params


# --- agreement with Hugging Face --------------------------------------------------------------

ROPE_FAMILIES = {"llama", "mistral", "qwen2", "gemma", "pythia", "phi"}
RMSNORM_FAMILIES = {"llama", "mistral", "qwen2", "gemma"}

# Max |ours - HF| of the log-probs, HF as shipped. Float64 throughout agrees to ~1e-15, but
# transformers keeps two float32 islands in a float64 model: the RoPE cos/sin tables (float32
# inv_freq and angles) and the Llama/Gemma RMSNorm (``.to(torch.float32)`` / ``x.float()``),
# each ~6e-8 relative, which reaches the log-probs as ~1e-7. With both lifted to float64
# (hf_tiny.float64_rope_, hf_tiny.float64_norms_) every family agrees to 1e-10: the gap is float32
# rounding, nothing else.
# Measured: gpt2 4e-15, bert 9e-16, opt 2e-15; pythia 2e-8, phi 9e-8 (RoPE only); llama 3e-7,
# mistral 2e-7, qwen2 3e-7, gemma 2e-6 (RoPE and RMSNorm); lifted, all <= 3e-15.
AS_SHIPPED_BOUND = (
    {family: 1e-10 for family in FAMILIES}
    | {family: 1e-6 for family in ROPE_FAMILIES}
    | {family: 1e-5 for family in RMSNORM_FAMILIES}
)
EXACT_BOUND = 1e-10


def _hf_model(family: str, head_width: int) -> nn.Module:
    """hf_tiny's model as shipped (float32 RMSNorm), with ``head_dim`` pinned to the spec's: the
    tiny Qwen2 config leaves it to default to width / heads = 2, the spec says 4."""
    make_config = hf_tiny.tiny_config

    def config(fam: str, **kw):
        cfg = make_config(fam, **kw)
        if fam in RMSNORM_FAMILIES:
            cfg.head_dim = head_width
        return cfg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_tiny, "tiny_config", config)
        return hf_tiny.build(family, float64_norms=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_interpreter_matches_hf(family):
    spec = tiny_spec(family)
    model = _hf_model(family, spec.architecture.attention.head_width)
    graph = build_graph(spec)
    # T = 6 > mistral's sliding window of 3, so the window masks keys
    assert [op.attr("window") for op in graph.ops if op.kind == "scores"] == [
        3 if family == "mistral" else None
    ]
    ids = torch.randint(
        0, spec.architecture.vocab_size, (3, 6), generator=torch.Generator().manual_seed(1)
    )
    ours = interpret(graph, _our_params(family, spec, model), ids)

    def hf() -> Tensor:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits
        return torch.log_softmax(logits.double(), -1)

    theirs = hf()
    assert ours.dtype == torch.float64 and ours.shape == theirs.shape
    err = (ours - theirs).abs().max().item()
    assert err <= AS_SHIPPED_BOUND[family], f"{family}: max abs diff {err:.3g} (as shipped)"
    if family in ROPE_FAMILIES | RMSNORM_FAMILIES:
        hf_tiny.float64_rope_(model)
        hf_tiny.float64_norms_(model)
        err = (ours - hf()).abs().max().item()
    assert err <= EXACT_BOUND, f"{family}: max abs diff {err:.3g} (float64 RoPE and RMSNorm)"


# --- kernels no tiny family reaches: ALiBi (BLOOM), adjacent pairs (GPT-J), linear RoPE scaling

_BASE = {
    "kind": "causal_lm", "vocab_size": 11, "max_positions": 6, "width": 8, "layers": 1,
    "block": "pre_norm", "norm": {"type": "layernorm", "eps": 0.1},
}  # fmt: skip
EXTRA_SPECS: dict[str, dict] = {
    "bloom": {
        **_BASE, "embedding_norm": True, "attention": {"heads": 4, "bias": True},
        "positions": {"type": "alibi"},
        "mlp": {"hidden": 32, "activation": "gelu_tanh", "bias": True},
        "embeddings": {"tied": True},
    },
    "gptj": {
        **_BASE, "block": "parallel_one_norm", "attention": {"heads": 1, "bias": False},
        "positions": {"type": "rope", "base": 10000.0, "rotated_fraction": 0.5,
                      "pair_layout": "adjacent"},
        "mlp": {"hidden": 12, "activation": "gelu_tanh", "bias": True},
        "embeddings": {"tied": False, "unembedding_bias": True},
    },
    "llama_linear": {
        **_BASE, "norm": {"type": "rmsnorm", "eps": 0.1}, "attention": {"heads": 2, "bias": False},
        "positions": {"type": "rope", "base": 10.0, "scaling": {"type": "linear", "factor": 2.5}},
        "mlp": {"hidden": 12, "activation": "swiglu", "bias": False},
        "embeddings": {"tied": False},
    },
}  # fmt: skip
_LAYERS["bloom"] = (
    "transformer.h",
    {
        "attn_norm.gain": "input_layernorm.weight", "attn_norm.bias": "input_layernorm.bias",
        "mlp_norm.gain": "post_attention_layernorm.weight",
        "mlp_norm.bias": "post_attention_layernorm.bias",
        "attn.W_O": "T:self_attention.dense.weight", "attn.b_O": "self_attention.dense.bias",
        "mlp.W_up": "T:mlp.dense_h_to_4h.weight", "mlp.b_up": "mlp.dense_h_to_4h.bias",
        "mlp.W_down": "T:mlp.dense_4h_to_h.weight", "mlp.b_down": "mlp.dense_4h_to_h.bias",
    },
)  # fmt: skip
_TOP["bloom"] = {
    "embed.W_E": "transformer.word_embeddings.weight",
    "embed_norm.gain": "transformer.word_embeddings_layernorm.weight",
    "embed_norm.bias": "transformer.word_embeddings_layernorm.bias",
    "final_norm.gain": "transformer.ln_f.weight", "final_norm.bias": "transformer.ln_f.bias",
}  # fmt: skip
_LAYERS["gptj"] = (
    "transformer.h",
    {
        "norm.gain": "ln_1.weight", "norm.bias": "ln_1.bias",
        **{f"attn.W_{p}": f"T:attn.{p.lower()}_proj.weight" for p in "QKV"},
        "attn.W_O": "T:attn.out_proj.weight",
        "mlp.W_up": "T:mlp.fc_in.weight", "mlp.b_up": "mlp.fc_in.bias",
        "mlp.W_down": "T:mlp.fc_out.weight", "mlp.b_down": "mlp.fc_out.bias",
    },
)  # fmt: skip
_TOP["gptj"] = {
    "embed.W_E": "transformer.wte.weight", "unembed.W_U": "T:lm_head.weight",
    "unembed.b_U": "lm_head.bias",
    "final_norm.gain": "transformer.ln_f.weight", "final_norm.bias": "transformer.ln_f.bias",
}  # fmt: skip
_LAYERS["llama_linear"], _TOP["llama_linear"] = _LAYERS["llama"], _TOP["llama"]


def _extra_config(family: str):
    import transformers

    common = {"vocab_size": 11, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if family == "bloom":
        return transformers.BloomConfig(
            **common, hidden_size=8, n_layer=1, n_head=4, layer_norm_epsilon=0.1,
            hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=True,
        )  # fmt: skip
    if family == "gptj":
        return transformers.GPTJConfig(
            **common, n_positions=6, n_embd=8, n_layer=1, n_head=1, rotary_dim=4, n_inner=12,
            activation_function="gelu_new", layer_norm_epsilon=0.1, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        )  # fmt: skip
    return transformers.LlamaConfig(
        **common, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=6,
        rms_norm_eps=0.1, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "rope_theta": 10.0, "factor": 2.5},
    )  # fmt: skip


# Measured as shipped: BLOOM's softmax runs in float32 and its GELU uses the truncated constant
# 0.79788456 for sqrt(2/pi); GPT-J's eager attention casts q, k to float32 and builds its sin/cos
# table in float32; Llama as above. All well inside 1e-5; any structural error is O(0.1).
EXTRA_BOUND = 1e-5


@pytest.mark.parametrize("family", list(EXTRA_SPECS))
def test_interpreter_matches_hf_extra_kernels(family):
    from symcomp.spec import spec_from_data
    from symcomp.verify.nullity import randomize_

    spec = spec_from_data({"name": f"tiny-{family}", "architecture": EXTRA_SPECS[family]})
    torch.manual_seed(0)
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(_extra_config(family))
    model = model.to(torch.float64).eval()
    randomize_(model, torch.Generator().manual_seed(0))
    params = _our_params(family, spec, model)
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(1))
    ours = interpret(build_graph(spec), params, ids)
    with torch.no_grad():
        theirs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits.double(), -1)
    err = (ours - theirs).abs().max().item()
    assert err <= EXTRA_BOUND, f"{family}: max abs diff {err:.3g}"
