"""The mixture-of-experts families of :func:`.config_import.import_hf_config`: Mixtral.

MixtralSparseMoeBlock (transformers 5.x) in place of Llama's MLP: a bias-free router
``gate`` (hidden -> num_local_experts), softmax over all experts, the num_experts_per_tok largest
probabilities renormalized to sum 1, and each expert a SwiGLU MLP of intermediate_size.
"""

from __future__ import annotations

from typing import Any

from symcomp.hf.config_pieces import _activation, _attention, _rope, _RopeKeys, _sizes
from symcomp.hf.config_reader import _Config, _short

# MixtralConfig's defaults where the key is absent.
_MIXTRAL_THETA = 1e6
_MIXTRAL_EXPERTS = 8
_MIXTRAL_TOP_K = 2

# Keys that change nothing at inference:
# - output_router_logits: also return the router logits (for the auxiliary loss); the
#   log-probabilities are the same;
# - router_aux_loss_coef: the weight of that training loss;
# - router_jitter_noise: MixtralSparseMoeBlock multiplies the router's input by noise only
#   ``if self.training``, as dropout does (whose keys are ignored for the same reason): the
#   function of the evaluated model, which symcomp reduces, never sees it.
MIXTRAL_IGNORED = frozenset({"output_router_logits", "router_aux_loss_coef", "router_jitter_noise"})


def _experts(c: _Config) -> dict[str, Any]:
    count = c.integer("num_local_experts", default=_MIXTRAL_EXPERTS)
    top_k = c.integer("num_experts_per_tok", default=_MIXTRAL_TOP_K)
    if not 1 <= top_k <= count:
        raise c.error(
            "num_experts_per_tok must be between 1 and num_local_experts",
            ("num_experts_per_tok",),
            found=_short(top_k),
            accepted=f"1 .. {count}",
        )
    jitter = c.get("router_jitter_noise", 0.0)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or jitter < 0:
        raise c.error(
            "router_jitter_noise must be a non-negative number (it acts in training only)",
            ("router_jitter_noise",),
            found=_short(jitter),
            accepted="a number >= 0",
        )
    return {"count": count, "top_k": top_k, "normalize": True}


def _mixtral(c: _Config) -> dict[str, Any]:
    # MixtralAttention: Llama's attention without biases; the window applies to every layer
    # when sliding_window is set (MixtralConfig's default: null, full attention).
    window = c.optional_integer("sliding_window", None)
    attention = _attention(c, bias=False, sliding_window=window)
    positions = _rope(c, _RopeKeys(partial=False))
    params = c.get("rope_parameters") or {}
    if not c.present("rope_theta") and not (isinstance(params, dict) and "rope_theta" in params):
        positions["base"] = _MIXTRAL_THETA
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-5)},
        "attention": attention,
        "positions": positions,
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "silu"),
            "gated": True,
            "bias": False,
            "experts": _experts(c),
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }
