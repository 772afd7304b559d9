"""Tiny transformers models mirroring ``specs/tiny/<family>.yaml``, for ground-truth tests.

Every model has d=8, f=12, the tiny spec's vocabulary, 6 positions, 1 layer, RoPE base 10 and
norm eps 0.1, is in float64 and has every parameter drawn at random
(:func:`symcomp.verify.nullity.randomize_`).
Attention uses PyTorch's scaled-dot-product attention (``sdpa``): the eager paths of most
families compute the softmax in float32, which would blur exact symmetries to ~1e-8; SDPA's
math kernel stays in float64 and supports forward-mode AD.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import Tensor, nn

from symcomp.spec import load_spec
from symcomp.spec.model import Spec
from symcomp.verify.nullity import randomize_

ROOT = Path(__file__).resolve().parent.parent

# family (spec file stem) -> transformers model_type
FAMILIES: dict[str, str] = {
    "gpt2": "gpt2",
    "bert": "bert",
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "pythia": "gpt_neox",
    "phi": "phi",
    "opt": "opt",
    "gemma": "gemma",
}

D, F, T, EPS, BASE = 8, 12, 6, 0.1, 10.0


def _rope(fraction: float = 1.0) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": BASE}
    if fraction != 1.0:
        out["partial_rotary_factor"] = fraction
    return out


def tiny_config(family: str, *, tied: bool | None = None) -> transformers.PretrainedConfig:
    """The transformers config of the tiny model of ``family``; ``tied`` overrides the tying."""
    common: dict[str, Any] = {
        # the vocabulary follows the tiny spec (parallel blocks need a larger one, see there)
        "vocab_size": tiny_spec(family).architecture.vocab_size,
        "dtype": "float64",
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    if family == "gpt2":
        kw = dict(
            n_positions=T, n_embd=D, n_layer=1, n_head=2, n_inner=F,
            activation_function="gelu_new", layer_norm_epsilon=EPS, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        )  # fmt: skip
        cfg: Any = transformers.GPT2Config(**common, **kw)
    elif family == "bert":
        cfg = transformers.BertConfig(
            **common, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=F, hidden_act="gelu", hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, max_position_embeddings=T, type_vocab_size=2,
            layer_norm_eps=EPS, tie_word_embeddings=True,
        )  # fmt: skip
    elif family in ("llama", "mistral", "qwen2"):
        heads, kv = (2, 2) if family == "llama" else (4, 2)
        kw = dict(
            hidden_size=D, intermediate_size=F, num_hidden_layers=1, num_attention_heads=heads,
            num_key_value_heads=kv, hidden_act="silu", max_position_embeddings=T,
            rms_norm_eps=EPS, tie_word_embeddings=False, rope_parameters=_rope(),
        )  # fmt: skip
        if family == "llama":
            cfg = transformers.LlamaConfig(**common, **kw, attention_bias=False, mlp_bias=False)
        elif family == "mistral":
            cfg = transformers.MistralConfig(**common, **kw, head_dim=4, sliding_window=3)
        else:
            cfg = transformers.Qwen2Config(**common, **kw, use_sliding_window=False)
            cfg.head_dim = 4  # not a declared field of Qwen2Config, but read by the model
    elif family == "pythia":
        cfg = transformers.GPTNeoXConfig(
            **common, hidden_size=D, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=F, hidden_act="gelu", max_position_embeddings=T,
            layer_norm_eps=EPS, tie_word_embeddings=False, use_parallel_residual=True,
            attention_bias=True, rope_parameters=_rope(0.5),
        )  # fmt: skip
    elif family == "phi":
        cfg = transformers.PhiConfig(
            **common, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, hidden_act="gelu_new",
            max_position_embeddings=T, layer_norm_eps=EPS, tie_word_embeddings=False,
            resid_pdrop=0.0, embd_pdrop=0.0, rope_parameters=_rope(0.5),
        )  # fmt: skip
    elif family == "opt":
        cfg = transformers.OPTConfig(
            **common, hidden_size=D, num_hidden_layers=1, ffn_dim=F, max_position_embeddings=T,
            do_layer_norm_before=True, word_embed_proj_dim=D, dropout=0.0, num_attention_heads=2,
            activation_function="relu", enable_bias=True, tie_word_embeddings=True,
        )  # fmt: skip
    elif family == "gemma":
        cfg = transformers.GemmaConfig(
            **common, hidden_size=D, intermediate_size=F, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, head_dim=4,
            hidden_act="gelu_pytorch_tanh", max_position_embeddings=T, rms_norm_eps=EPS,
            tie_word_embeddings=True, rope_parameters=_rope(),
        )  # fmt: skip
    else:
        raise KeyError(family)
    if tied is not None:
        cfg.tie_word_embeddings = tied
    return cfg


def _rmsnorm_float64(self: nn.Module, x: Tensor) -> Tensor:
    eps = getattr(self, "variance_epsilon", None) or self.eps
    normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (
        normed * (1.0 + self.weight)
        if type(self).__name__ == "GemmaRMSNorm"
        else (self.weight * normed)
    )


def float64_rope_(model: nn.Module) -> None:
    """Compute the RoPE cos/sin tables in float64: transformers builds inv_freq in float32 and
    takes the angles with ``.float()`` even in a float64 model. The rotation itself stays HF's."""
    for module in model.modules():
        # (GPT-J's has a sin/cos table instead of inv_freq: hf_families patches it)
        if type(module).__name__.endswith("RotaryEmbedding") and hasattr(module, "inv_freq"):
            dim = 2 * module.inv_freq.numel()
            base = module.config.rope_parameters["rope_theta"]
            inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)

            def forward(x: Tensor, position_ids: Tensor, inv_freq: Tensor = inv_freq):
                freqs = position_ids[..., None].double() * inv_freq
                emb = torch.cat((freqs, freqs), dim=-1)
                return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

            module.forward = forward


def float64_norms_(model: nn.Module) -> int:
    """Make every RMSNorm of ``model`` compute in the input's dtype (transformers casts to float32
    inside, which blurs the exact symmetries of a float64 model to ~1e-8); returns how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = types.MethodType(_rmsnorm_float64, module)
            count += 1
    return count


def build(
    family: str,
    *,
    tied: bool | None = None,
    seed: int = 0,
    float64_norms: bool = True,
    vocab: int | None = None,
    layers: int | None = None,
) -> nn.Module:
    """A tiny float64 transformers model of ``family`` with every parameter random.

    ``float64_norms`` replaces the RMSNorms' float32 arithmetic by float64 (same formula);
    ``vocab`` and ``layers`` override the vocabulary size and the number of layers.
    """
    cfg = tiny_config(family, tied=tied)
    if vocab is not None:
        cfg.vocab_size = vocab
    if layers is not None:
        cfg.num_hidden_layers = layers
        if getattr(cfg, "layer_types", None):  # one per layer, the pattern repeated
            cfg.layer_types = [cfg.layer_types[i % len(cfg.layer_types)] for i in range(layers)]
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    if family == "bert":
        model: Any = transformers.BertForMaskedLM(cfg)
    else:
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model = model.to(torch.float64).eval()
    if family == "opt":  # OPT fixes the LayerNorm eps at 1e-5 in code: set it on the modules
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = EPS
    if float64_norms:
        float64_norms_(model)
    for attempt in range(100):
        randomize_(model, torch.Generator().manual_seed(seed + 1000 * attempt))
        if family != "opt" or relu_neurons_mixed(model, cfg.vocab_size):
            return model
    raise RuntimeError("no seed gave ReLU neurons that are all sometimes on, sometimes off")


def relu_neurons_mixed(model: nn.Module, vocab: int, low: float = 0.05) -> bool:
    """Whether every ReLU neuron (OPT's fc1) is active on at least ``low`` and at most
    ``1 - low`` of the positions of a probe sample. A neuron dead (or always on) on every input
    adds null directions of that random point only, which a derivation cannot predict."""
    pre: list[Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: pre.append(out.detach()))
        for name, m in model.named_modules()
        if name.endswith("fc1")
    ]
    probe = torch.randint(0, vocab, (256, T), generator=torch.Generator().manual_seed(12345))
    with torch.no_grad():
        model(probe)
    for h in hooks:
        h.remove()
    for out in pre:
        active = (out > 0).double().reshape(-1, out.shape[-1]).mean(0)
        if bool(((active < low) | (active > 1 - low)).any()):
            return False
    return True


def hf_params(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters by HF name, each shared tensor once, detached."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def logprob_fn(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """``fn(params, input_ids)`` -> log-probabilities (n_seq, T, V), via functional_call."""

    def fn(params: dict[str, Tensor], input_ids: Tensor) -> Tensor:
        out = torch.func.functional_call(model, params, (input_ids,), {"use_cache": False})
        return torch.log_softmax(out.logits, dim=-1)

    return fn


def tiny_spec(family: str, *, tied: bool | None = None) -> Spec:
    """The spec of ``specs/tiny/<family>.yaml`` (tying overridden if asked), loaded."""
    path = ROOT / "specs" / "tiny" / f"{family}.yaml"
    spec = load_spec(path)
    if tied is not None:
        emb = spec.architecture.embeddings.model_copy(update={"tied": tied})
        arch = spec.architecture.model_copy(update={"embeddings": emb})
        spec = spec.model_copy(update={"architecture": arch})
    return spec
