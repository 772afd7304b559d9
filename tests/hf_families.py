"""Tiny transformers configs of the families that issue 24 adds, and the generic check that
every one of them must pass against transformers itself.

Each family registers a builder of a tiny config (d = 8, f = 12, 6 positions, 1 layer, norm
eps 0.1, RoPE base 10: the sizes of :mod:`hf_tiny`) in ``CONFIGS``. :func:`check_family`
saves a random float64 checkpoint of it, runs ``symcomp reduce --hf`` on it, and checks:

* the generated standard and reduced models reproduce transformers' log-probs within 1e-10,
  with transformers' float32 islands (norms, RoPE tables, ...) patched to float64, and within
  1e-6 against stock transformers;
* the reduced model has exactly ``parameters - redundant`` parameters;
* the printed count equals the Jacobian nullity of the transformers model.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from symcomp.hf import import_hf_config
from symcomp.pipeline import analyze
from symcomp.verify.nullity import measure_nullity, randomize_

try:
    import hf_tiny
except ImportError:  # tests/ became a package
    from tests import hf_tiny

D, F, T, EPS, BASE = hf_tiny.D, hf_tiny.F, hf_tiny.T, hf_tiny.EPS, hf_tiny.BASE
V = 40
TOL, STOCK_TOL = 1e-10, 1e-6

COMMON: dict[str, Any] = {
    "vocab_size": V,
    "dtype": "float64",
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "num_hidden_layers": 1,
    "max_position_embeddings": T,
}

CONFIGS: dict[str, Callable[[], transformers.PretrainedConfig]] = {}

KNOWN_GAPS: dict[str, str] = {}
"""Families whose check fails for a known reason: their tests are strict xfails."""

DEFAULT_FLOAT64: set[str] = set()
"""Families whose transformers code runs in float64 only under torch's default dtype float64."""

Patch = Callable[[nn.Module], None]
PATCHES: list[Patch] = [hf_tiny.float64_norms_, hf_tiny.float64_rope_]
"""What lifts transformers' float32 islands to float64 (same formulas), applied in order."""
STOCK_TOLERANCE: dict[str, float] = {}
"""family -> a wider stock tolerance, where transformers' own float32 islands measurably exceed
STOCK_TOL at the tiny generic point (each entry says what it measured)."""
ATTENTION: dict[str, str] = {}
"""model_type -> attn_implementation, for families without SDPA (default: sdpa)."""


def family(name: str):
    """Register the decorated function as the tiny config builder of ``name``."""

    def register(fn: Callable[[], transformers.PretrainedConfig]):
        CONFIGS[name] = fn
        return fn

    return register


def config(model_type: str, **kw: Any) -> transformers.PretrainedConfig:
    """A config of ``model_type`` with the common tiny settings, ``kw`` overriding them."""
    return transformers.AutoConfig.for_model(model_type, **{**COMMON, **kw})


def rope(fraction: float = 1.0) -> dict[str, Any]:
    return hf_tiny._rope(fraction)


# --- the families --------------------------------------------------------------------------
# (one section per group of families, kept apart so that branches merge cleanly)

# --- section: plain families (importer and checkpoint layouts) ------------------------------


@family("starcoder2")
def _starcoder2() -> transformers.PretrainedConfig:
    return config(
        "starcoder2", hidden_size=D, intermediate_size=F, num_attention_heads=2,
        num_key_value_heads=1, hidden_act="gelu_pytorch_tanh", norm_epsilon=EPS, use_bias=True,
        sliding_window=4, tie_word_embeddings=False, rope_parameters=rope(),
    )  # fmt: skip


@family("gpt_bigcode")
def _gpt_bigcode() -> transformers.PretrainedConfig:
    # multi_query: one key/value head
    return config(
        "gpt_bigcode", n_embd=D, n_layer=1, n_head=2, n_inner=F, n_positions=T,
        activation_function="gelu_pytorch_tanh", layer_norm_epsilon=EPS, multi_query=True,
        tie_word_embeddings=True,
    )  # fmt: skip


@family("phi3")
def _phi3() -> transformers.PretrainedConfig:
    # GQA with a head width of 4 (q wider than d), half of each head rotated
    return config(
        "phi3", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, head_dim=4, hidden_act="silu", rms_norm_eps=EPS,
        sliding_window=4, tie_word_embeddings=False, rope_parameters=rope(0.5),
    )  # fmt: skip


@family("stablelm")
def _stablelm() -> transformers.PretrainedConfig:
    # as StableLM 2: b_V, no b_O, g k = d, a LayerNorm-only stream (A4' value_bias_centering)
    return config(
        "stablelm", hidden_size=D, intermediate_size=F, num_attention_heads=2,
        num_key_value_heads=2, hidden_act="silu", layer_norm_eps=EPS, use_qkv_bias=True,
        use_parallel_residual=False, tie_word_embeddings=False, rope_parameters=rope(0.5),
    )  # fmt: skip


@family("gptj")
def _gptj() -> transformers.PretrainedConfig:
    # rotary_dim 2 of a head width 4: rotated and passed-through dims both exist
    return config(
        "gptj", n_embd=D, n_layer=1, n_head=2, n_inner=F, n_positions=T, rotary_dim=2,
        activation_function="gelu_new", layer_norm_epsilon=EPS, tie_word_embeddings=False,
    )  # fmt: skip


def float64_gptj_positions_(model: nn.Module) -> None:
    """GPT-J's sin/cos table in float64 (transformers builds it in float32)."""
    for module in model.modules():
        if type(module).__name__ == "GPTJRotaryEmbedding":
            dim, n = module.pos_embd_dim, module.max_positions
            inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            angles = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq
            module.embed_positions = torch.cat((angles.sin(), angles.cos()), dim=1)


PATCHES.append(float64_gptj_positions_)


@family("falcon")
def _falcon() -> transformers.PretrainedConfig:
    # new_decoder_architecture: 2 key/value heads of 2 query heads each, two parallel norms
    return config(
        "falcon", hidden_size=D, num_attention_heads=4, num_kv_heads=2,
        new_decoder_architecture=True, parallel_attn=True, bias=False, ffn_hidden_size=F,
        activation="gelu", layer_norm_epsilon=EPS, tie_word_embeddings=True,
        rope_parameters=rope(),
    )  # fmt: skip


@family("mpt")
def _mpt() -> transformers.PretrainedConfig:
    # ALiBi over 4 heads; transformers fixes the MLP at 4 * d_model
    return config(
        "mpt", d_model=D, n_heads=4, n_layers=1, max_seq_len=T, layer_norm_epsilon=EPS,
        tie_word_embeddings=False, max_position_embeddings=None,
    )  # fmt: skip


def _mpt_attention_float64(self, hidden_states, position_bias, attention_mask=None, **kwargs):
    """MptAttention.forward without a cache, its softmax in the input's dtype (not float32)."""
    batch, length, _ = hidden_states.shape
    qkv = self.Wqkv(hidden_states)
    if self.clip_qkv:
        qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
    q, k, v = (
        t.reshape(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        for t in qkv.chunk(3, dim=2)
    )
    scores = q @ k.transpose(-1, -2) * self.softmax_scale
    scores = scores + position_bias[:, -length:, -length:]
    if attention_mask is not None:
        scores = scores.masked_fill(attention_mask, torch.finfo(q.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    context = (weights @ v).permute(0, 2, 1, 3).reshape(batch, length, -1)
    return self.out_proj(context), weights


def float64_mpt_attention_(model: nn.Module) -> None:
    for module in model.modules():
        if type(module).__name__ == "MptAttention":
            module.forward = types.MethodType(_mpt_attention_float64, module)


PATCHES.append(float64_mpt_attention_)


@family("bloom")
def _bloom() -> transformers.PretrainedConfig:
    # ALiBi over 4 heads; transformers fixes the MLP at 4 * hidden_size
    return config(
        "bloom", hidden_size=D, n_head=4, n_layer=1, layer_norm_epsilon=EPS, seq_length=T,
        tie_word_embeddings=True, max_position_embeddings=None,
    )  # fmt: skip


class _Float64Softmax:
    """A stand-in for torch.nn.functional whose softmax ignores a float32 ``dtype``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.nn.functional, name)

    @staticmethod
    def softmax(x: torch.Tensor, dim: int, dtype: Any = None) -> torch.Tensor:
        return torch.softmax(x, dim=dim)


def float64_bloom_(model: nn.Module) -> None:
    """BLOOM's attention softmax in the input's dtype (transformers takes it in float32), and its
    GELU as the plain function (its autograd.Function has no forward-mode AD)."""
    from transformers.models.bloom import modeling_bloom

    for module in model.modules():
        if type(module).__name__ == "BloomGelu":
            module.forward = modeling_bloom.bloom_gelu_forward
        if type(module).__name__ == "BloomAttention":

            def forward(*args: Any, _forward: Any = module.forward, **kw: Any) -> Any:
                F, modeling_bloom.F = modeling_bloom.F, _Float64Softmax()
                try:
                    return _forward(*args, **kw)
                finally:
                    modeling_bloom.F = F

            module.forward = forward


PATCHES.append(float64_bloom_)


# --- section: norms, caps and multipliers ----------------------------------------------------


@family("qwen3")
def _qwen3() -> transformers.PretrainedConfig:
    # GQA (4 query heads, 2 kv heads of width 4), per-head QK RMSNorm, untied
    return config(
        "qwen3", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, head_dim=4, rms_norm_eps=EPS, rope_parameters=rope(),
        tie_word_embeddings=False,
    )  # fmt: skip


@family("granite")
def _granite() -> transformers.PretrainedConfig:
    # every multiplier away from 1, attention_multiplier away from head_dim^-0.5
    return config(
        "granite", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=EPS, rope_parameters=rope(),
        tie_word_embeddings=False, embedding_multiplier=3.0, residual_multiplier=0.7,
        attention_multiplier=0.3, logits_scaling=2.5,
    )  # fmt: skip


@family("olmo2")
def _olmo2() -> transformers.PretrainedConfig:
    # GQA, QK RMSNorm over all heads' features, norms on the sublayer outputs only
    return config(
        "olmo2", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=EPS, rope_parameters=rope(),
        tie_word_embeddings=False,
    )  # fmt: skip


@family("cohere")
def _cohere() -> transformers.PretrainedConfig:
    # parallel block with one bias-free LayerNorm, adjacent rotary pairs, logit_scale, tied
    return config(
        "cohere", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, layer_norm_eps=EPS, rope_parameters=rope(),
        logit_scale=0.3, tie_word_embeddings=True,
    )  # fmt: skip


import functools  # noqa: E402 (this section's own imports)


def _cohere_layernorm_float64(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def float64_norms_family_(model: nn.Module) -> None:
    """The norms and rotary tables of this section's families in float64 (same formulas):
    CohereLayerNorm, and Cohere's interleaved cos/sin (float64_rope_ writes split halves)."""
    for module in model.modules():
        name = type(module).__name__
        if name == "CohereLayerNorm":
            module.forward = functools.partial(_cohere_layernorm_float64, module)
        elif name == "CohereRotaryEmbedding":
            dim = 2 * module.inv_freq.numel()
            base = module.config.rope_parameters["rope_theta"]
            inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)

            def forward(x, position_ids, inv_freq=inv_freq):
                freqs = position_ids[..., None].double() * inv_freq
                emb = torch.repeat_interleave(freqs, 2, dim=-1)
                return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

            module.forward = forward
        elif name == "CohereAttention":
            _swap_global_(module, "apply_rotary_pos_emb", _cohere_rotary_float64)


def _swap_global_(module: nn.Module, name: str, replacement: Callable) -> None:
    """Run ``module``'s forward with its modeling file's global ``name`` replaced (this model
    instance only: the stock model keeps transformers' own)."""
    globals_of = sys.modules[type(module).__module__]
    forward = module.forward

    def wrapped(*args, **kwargs):
        original = getattr(globals_of, name)
        setattr(globals_of, name, replacement)
        try:
            return forward(*args, **kwargs)
        finally:
            setattr(globals_of, name, original)

    module.forward = wrapped


def _cohere_rotary_float64(q, k, cos, sin, unsqueeze_dim=1):
    """Cohere's apply_rotary_pos_emb without its .float() (interleaved pairs)."""
    from transformers.models.cohere.modeling_cohere import rotate_half

    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@family("gemma2")
def _gemma2() -> transformers.PretrainedConfig:
    # 2 layers (sliding, then full), window 3 < T, soft-caps small enough to bend the logits,
    # query_pre_attn_scalar away from head_dim, GQA
    return config(
        "gemma2", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, head_dim=4, rms_norm_eps=EPS, rope_parameters=rope(),
        num_hidden_layers=2, sliding_window=3, query_pre_attn_scalar=7,
        attn_logit_softcapping=1.5, final_logit_softcapping=2.0,
    )  # fmt: skip


ATTENTION["gemma2"] = "eager"  # Gemma2 has no SDPA path (soft-capping)
# Stock Gemma2 runs its nine RMSNorms (weight included) and the eager softmax in float32: at
# this point it is 1.7e-6 from its own float64 formulas (1.6e-6 with one layer; 3e-7 with the
# norms alone lifted), while the generated models match the float64 formulas within 1e-14.
STOCK_TOLERANCE["gemma2"] = 5e-6


def _gemma2_rmsnorm_float64(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


def _eager_float64(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                   softcap=None, **kwargs):  # fmt: skip
    """Gemma2's eager attention with the softmax in the input's dtype (not float32)."""
    from transformers.models.gemma2.modeling_gemma2 import repeat_kv

    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    logits = query @ key.transpose(2, 3) * scaling
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    if attention_mask is not None:
        logits = logits + attention_mask
    probs = torch.softmax(logits, dim=-1)
    return (probs @ value).transpose(1, 2).contiguous(), probs


def float64_gemma2_(model: nn.Module) -> None:
    """Gemma2's float32 islands in float64: its RMSNorm (1 + w), the eager softmax, and the
    embedding scale (a float32 sqrt(width) buffer)."""
    for module in model.modules():
        name = type(module).__name__
        if name == "Gemma2RMSNorm":
            module.forward = functools.partial(_gemma2_rmsnorm_float64, module)
        elif name == "Gemma2Attention":
            _swap_global_(module, "eager_attention_forward", _eager_float64)
        elif hasattr(module, "scalar_embed_scale"):
            module.embed_scale.fill_(module.scalar_embed_scale)


PATCHES.append(float64_norms_family_)
PATCHES.append(float64_gemma2_)


# --- section: positions, activations and layer types -----------------------------------------


@family("nemotron")
def _nemotron():
    # relu2 MLP with biases, LayerNorm1P (1 + w) with a bias, partial rotary (k = 4, r = 2)
    return config(
        "nemotron", hidden_size=D, intermediate_size=F, num_attention_heads=2,
        num_key_value_heads=1, head_dim=4, norm_eps=EPS, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=False, rope_parameters=rope(0.5),
    )  # fmt: skip


@family("xglm")
def _xglm():
    # fixed sinusoid table (offset 2), embeddings scaled by sqrt(d), pre-LayerNorm, tied
    return config(
        "xglm", d_model=D, ffn_dim=F, attention_heads=2, num_layers=1, scale_embedding=True,
        activation_function="gelu", tie_word_embeddings=True,
    )  # fmt: skip


@family("smollm3")
def _smollm3():
    # layer 0 rotates, layer 1 is NoPE; biases on q, k, v, o (the key-bias shift on both kinds)
    return config(
        "smollm3", hidden_size=D, intermediate_size=F, num_attention_heads=4,
        num_key_value_heads=2, head_dim=4, num_hidden_layers=2, no_rope_layers=[1, 0],
        rms_norm_eps=EPS, attention_bias=True, tie_word_embeddings=False, rope_parameters=rope(),
    )  # fmt: skip


@family("roberta")
def _roberta():
    # positions counted over tokens other than pad_token_id 1 (rows 2.., padding reads row 1;
    # row 0 unread); tied, as RobertaForMaskedLM ties lm_head.bias to lm_head.decoder.bias
    return config(
        "roberta", hidden_size=D, intermediate_size=F, num_attention_heads=2,
        max_position_embeddings=T + 2, pad_token_id=1, type_vocab_size=2, layer_norm_eps=EPS,
        hidden_act="gelu", tie_word_embeddings=True,
    )  # fmt: skip


def float64_sinusoids_(model: nn.Module) -> None:
    """XGLM builds its sinusoid table in float32: rebuild it in float64 (same formula)."""
    from symcomp.ir.interpreter import sinusoid_table

    for module in model.modules():
        if type(module).__name__ == "XGLMSinusoidalPositionalEmbedding":
            rows, width = module.weights.shape
            table = sinusoid_table(rows, width, 10000.0, 0)
            if module.padding_idx is not None:
                table[module.padding_idx] = 0.0
            module.weights = table


PATCHES.append(float64_sinusoids_)
# XGLM's eager attention clamps with torch.full((), finfo(float64).min) in torch's default
# dtype: a float64 XGLM runs only under a float64 default dtype, stock transformers included.
DEFAULT_FLOAT64.add("xglm")


# --- section: mixture of experts --------------------------------------------------------------


MIXTRAL_F = 6


@family("mixtral")
def _mixtral() -> transformers.PretrainedConfig:
    # 4 experts, top 2: on the nullity draw every expert is chosen by some positions and not
    # by others (tests/test_moe.py checks it); 2 query heads on 1 key/value head; experts of
    # 6 neurons (the Jacobian's cost grows with the square of the parameters)
    return config(
        "mixtral",
        hidden_size=D,
        intermediate_size=MIXTRAL_F,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        rms_norm_eps=EPS,
        rope_parameters=rope(),
        tie_word_embeddings=False,
    )


def float64_router_(model: nn.Module) -> None:
    """MixtralTopKRouter's softmax, top-k and renormalization in float64 (stock: float32)."""

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = nn.functional.linear(hidden_states, self.weight)
        probs = torch.softmax(router_logits, dim=-1)
        top, index = torch.topk(probs, self.top_k, dim=-1)
        top = top / top.sum(dim=-1, keepdim=True)
        return router_logits, top, index

    for module in model.modules():
        if type(module).__name__.endswith("TopKRouter"):
            module.forward = types.MethodType(forward, module)


PATCHES.append(float64_router_)


# --- the check -----------------------------------------------------------------------------


# SDPA attention (see hf_tiny); the experts of a mixture run as a loop over the experts
# ("eager"): the default grouped_mm takes float32, bfloat16 and float16 only, and the Jacobian
# of "batched_mm" (which vmaps) is slower here than a loop of JVPs through "eager". Dense
# models ignore the experts setting.
IMPLEMENTATIONS: dict[str, str] = {"attn_implementation": "sdpa", "experts_implementation": "eager"}


def patch_float64_(model: nn.Module) -> nn.Module:
    for patch in PATCHES:
        patch(model)
    return model


def _auto(cfg: transformers.PretrainedConfig) -> tuple[Any, str]:
    """The LM class of ``cfg`` (masked for an encoder: a model_type with a masked-LM class that
    is not configured as a decoder) and its attention: SDPA, or eager where it has no SDPA."""
    from transformers.models.auto import modeling_auto

    masked = cfg.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    auto = (
        transformers.AutoModelForMaskedLM
        if masked and not cfg.is_decoder
        else transformers.AutoModelForCausalLM
    )
    cls = auto._model_mapping[type(cfg)]
    return auto, "sdpa" if cls._supports_sdpa else "eager"


def build(cfg: transformers.PretrainedConfig, seed: int = 0) -> nn.Module:
    """The float64 model of ``cfg`` (SDPA where it has it), every parameter drawn at random."""
    torch.manual_seed(seed)
    auto, attn = _auto(cfg)
    attention = ATTENTION.get(cfg.model_type, attn)
    model = auto.from_config(cfg, **{**IMPLEMENTATIONS, "attn_implementation": attention})
    model = model.to(torch.float64).eval()
    randomize_(model, torch.Generator().manual_seed(seed))
    return model


def load(folder: Path) -> nn.Module:
    cfg = transformers.AutoConfig.from_pretrained(folder)
    auto, attn = _auto(cfg)
    attention = ATTENTION.get(cfg.model_type, attn)
    model = auto.from_pretrained(folder, **{**IMPLEMENTATIONS, "attn_implementation": attention})
    return model.to(torch.float64).eval()


def _import(out: Path):
    sys.path.insert(0, str(out.parent))
    try:
        return importlib.import_module(out.name)
    finally:
        sys.path.remove(str(out.parent))


def wider(cfg: transformers.PretrainedConfig) -> transformers.PretrainedConfig:
    """Another generic instance of the same structure, for the slow matrix: twice the width and
    the heads (the head width and the relation of the key/value width to d kept) and a wider
    MLP, whatever the family calls those keys (its ``attribute_map``). Depth is left to
    ``verify``'s second instance (two layers, measured on the model's own interpreter, which
    these tests hold to transformers): a deeper transformers Jacobian costs minutes a family."""
    cfg = type(cfg).from_dict(cfg.to_dict())
    heads, kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None)
    cfg.hidden_size = 2 * cfg.hidden_size
    cfg.num_attention_heads = 2 * heads
    if kv is not None and kv != 1:
        cfg.num_key_value_heads = 2 * kv
    if getattr(cfg, "intermediate_size", None):
        cfg.intermediate_size = 2 * cfg.intermediate_size + 2
    for key in ("ffn_hidden_size", "n_inner"):
        if getattr(cfg, key, None):
            setattr(cfg, key, 2 * getattr(cfg, key) + 2)
    return _generic_vocab(cfg)


def _generic_vocab(cfg: transformers.PretrainedConfig) -> transformers.PretrainedConfig:
    """The config with a vocabulary large enough to be generic at its new sizes: a parallel
    block's layer-0 MLP reads the current token's embedding alone, so V tokens must give it
    twice its weights' conditions (``parallel_vocab``), or the model has null directions of its
    own (the wider Cohere at V = 40, d = 16, f = 26 gated: 820 against 193)."""
    from symcomp.hf.config_import import import_hf_config
    from symcomp.symmetry.analysis import parallel_vocab

    with tempfile.TemporaryDirectory() as folder:
        cfg.save_pretrained(folder)
        arch = import_hf_config(folder).architecture
    cfg.vocab_size = parallel_vocab(arch, cfg.vocab_size, width=arch.width, hidden=arch.mlp.hidden)
    return cfg


def check_family(name: str, run_cli, tmp: Path, variant: Callable | None = None) -> int:
    """Everything a new family must pass (see the module docstring) on its tiny config, or on
    ``variant`` of it; returns the count."""
    folder = tmp / "checkpoint"
    cfg = CONFIGS[name]()
    build(variant(cfg) if variant else cfg).save_pretrained(folder)
    out = tmp / f"reduced_{name.replace('-', '_')}"
    code, stdout, stderr = run_cli("reduce", "--hf", str(folder), "-o", str(out))
    assert code == 0, stderr + stdout
    default = torch.get_default_dtype()
    if name in DEFAULT_FLOAT64:
        torch.set_default_dtype(torch.float64)
    try:
        return _check_against_transformers(name, folder, out)
    finally:
        torch.set_default_dtype(default)


def _check_against_transformers(name: str, folder: Path, out: Path) -> int:
    spec = import_hf_config(folder)
    analysis = analyze(spec)
    pkg = _import(out)
    stock = load(folder)
    vocab = spec.architecture.vocab_size  # V, or a variant's own
    ids = torch.randint(0, vocab, (3, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected_stock = torch.log_softmax(stock(input_ids=ids).logits, dim=-1)
        hf = patch_float64_(load(folder))
        expected = torch.log_softmax(hf(input_ids=ids).logits, dim=-1)
        standard = pkg.Model.from_pretrained(out)
        reduced = pkg.ReducedModel.from_pretrained(out)
        for model in (standard, reduced):
            got = model.log_probs(ids)
            assert float((got - expected).abs().max()) <= TOL
            # float32 rounding is relative: scaled by the log-probs' size (at least 1)
            scale = max(1.0, float(expected_stock.abs().max()))
            stock_tol = STOCK_TOLERANCE.get(name, STOCK_TOL) * scale
            assert float((got - expected_stock).abs().max()) <= stock_tol
    assert sum(p.numel() for p in reduced.parameters()) == analysis.reduced_parameters
    assert sum(p.numel() for p in standard.parameters()) == sum(p.numel() for p in hf.parameters())
    measurement, _ = measure_nullity(
        hf_tiny.logprob_fn(hf),
        hf_tiny.hf_params(hf),
        vocab=vocab,
        seq_len=T,
        # as many sequences as at V (a larger V gives more rows per sequence, not more contexts)
        factor=10.0 * vocab / V,
        generator=torch.Generator().manual_seed(7),
    )
    assert measurement.trustworthy, measurement.report.summary()
    assert measurement.nullity == analysis.redundant, measurement.report.summary()
    return analysis.redundant
