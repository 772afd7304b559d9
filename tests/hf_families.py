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

Patch = Callable[[nn.Module], None]
PATCHES: list[Patch] = [hf_tiny.float64_norms_, hf_tiny.float64_rope_]
"""What lifts transformers' float32 islands to float64 (same formulas), applied in order."""


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
    return config(
        "stablelm", hidden_size=D, intermediate_size=F, num_attention_heads=2,
        num_key_value_heads=1, hidden_act="silu", layer_norm_eps=EPS, use_qkv_bias=False,
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


# --- section: positions, activations and layer types -----------------------------------------


# --- section: mixture of experts --------------------------------------------------------------


# --- the check -----------------------------------------------------------------------------


def patch_float64_(model: nn.Module) -> nn.Module:
    for patch in PATCHES:
        patch(model)
    return model


def _sdpa(make: Callable[..., nn.Module], source: Any) -> nn.Module:
    """``make(source)`` with SDPA attention, or eager where the family has no SDPA path (MPT)."""
    try:
        return make(source, attn_implementation="sdpa")
    except ValueError as exc:
        if "scaled_dot_product_attention" not in str(exc):
            raise
        return make(source, attn_implementation="eager")


def build(cfg: transformers.PretrainedConfig, seed: int = 0) -> nn.Module:
    """The float64 model of ``cfg`` (SDPA), every parameter drawn at random."""
    torch.manual_seed(seed)
    model = _sdpa(transformers.AutoModelForCausalLM.from_config, cfg)
    model = model.to(torch.float64).eval()
    randomize_(model, torch.Generator().manual_seed(seed))
    return model


def load(folder: Path) -> nn.Module:
    model = _sdpa(transformers.AutoModelForCausalLM.from_pretrained, folder)
    return model.to(torch.float64).eval()


def _import(out: Path):
    sys.path.insert(0, str(out.parent))
    try:
        return importlib.import_module(out.name)
    finally:
        sys.path.remove(str(out.parent))


def check_family(name: str, run_cli, tmp: Path) -> int:
    """Everything a new family must pass (see the module docstring); returns the count."""
    folder = tmp / "checkpoint"
    build(CONFIGS[name]()).save_pretrained(folder)
    out = tmp / f"reduced_{name.replace('-', '_')}"
    code, stdout, stderr = run_cli("reduce", "--hf", str(folder), "-o", str(out))
    assert code == 0, stderr + stdout
    spec = import_hf_config(folder)
    analysis = analyze(spec)
    pkg = _import(out)
    stock = load(folder)
    ids = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(4))
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
            assert float((got - expected_stock).abs().max()) <= STOCK_TOL * scale
    assert sum(p.numel() for p in reduced.parameters()) == analysis.reduced_parameters
    assert sum(p.numel() for p in standard.parameters()) == sum(p.numel() for p in hf.parameters())
    measurement, _ = measure_nullity(
        hf_tiny.logprob_fn(hf),
        hf_tiny.hf_params(hf),
        vocab=V,
        seq_len=T,
        generator=torch.Generator().manual_seed(7),
    )
    assert measurement.trustworthy, measurement.report.summary()
    assert measurement.nullity == analysis.redundant, measurement.report.summary()
    return analysis.redundant
