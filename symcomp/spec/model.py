"""The spec language: a transformer's architecture plus the symmetry groups to reduce.

Every model is a frozen pydantic model: immutable, readable when printed, serializable to JSON,
and documented field by field (``symcomp schema`` prints the JSON Schema built from these
descriptions). Cross-field rules (heads dividing the width, an even rotated width, ...) live in
:mod:`symcomp.spec.checks` so that each can point at the offending key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

SPEC_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False, strict=True
    )


# Every size, count and index is below 2^31: far above any real model's, and it keeps the sizes'
# products (parameter counts) exact and cheap.
MAX_SIZE = 2**31 - 1
PositiveInt = Annotated[int, Field(strict=True, gt=0, le=MAX_SIZE)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0, le=MAX_SIZE)]

Activation = Literal["relu", "relu2", "gelu", "gelu_tanh", "gelu_tanh_bloom", "silu"]
# What a user may write: the plain activations plus the gated shorthands.
MLPActivation = Literal[
    "relu", "relu2", "gelu", "gelu_tanh", "gelu_tanh_bloom", "silu", "swiglu", "geglu"
]
# Gated shorthands: the gate branch goes through the activation, the up branch is linear.
GATED_SHORTHANDS: dict[str, str] = {"swiglu": "silu", "geglu": "gelu"}


class Norm(_Frozen):
    """The normalization used everywhere in the model (block norms, embedding, final, head)."""

    type: Literal["layernorm", "rmsnorm"] = Field(
        description="layernorm: subtract the mean, divide by the RMS, gain and bias. "
        "rmsnorm: divide by the RMS, gain only (unless bias is set)."
    )
    eps: float = Field(gt=0, description="Added to the variance before the square root.")
    bias: bool = Field(
        default=None,  # type: ignore[assignment]
        description="Whether the norm has a learned bias. Default: true for layernorm, "
        "false for rmsnorm.",
    )
    gain: Literal["w", "one_plus_w"] = Field(
        default="w",
        description="How the gain is stored: 'w' multiplies by the parameter; 'one_plus_w' "
        "multiplies by 1 + the parameter (Gemma).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_bias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("bias") is None:
            data = {**data, "bias": data.get("type") == "layernorm"}
        return data


class AttentionBias(_Frozen):
    """Which attention projections carry a bias (Qwen2: q, k, v but not o)."""

    q: bool = Field(description="Bias on the query projection.")
    k: bool = Field(description="Bias on the key projection.")
    v: bool = Field(description="Bias on the value projection.")
    o: bool = Field(description="Bias on the output projection.")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: Any) -> Any:
        if isinstance(data, bool):
            return {"q": data, "k": data, "v": data, "o": data}
        return data


class Attention(_Frozen):
    """Multi-head attention, with grouped (GQA) or multi-query (MQA) key/value heads."""

    heads: PositiveInt = Field(description="Number of query heads.")
    kv_heads: PositiveInt = Field(
        default=None,  # type: ignore[assignment]
        description="Number of key/value heads; each serves heads / kv_heads query heads. "
        "Default: heads (plain multi-head attention).",
    )
    head_width: PositiveInt | None = Field(
        default=None,
        description="Width of one head. Default: width / heads (which must then divide); a "
        "loaded spec always has it filled in.",
    )
    bias: AttentionBias = Field(
        description="Biases of the q, k, v, o projections: a mapping {q, k, v, o} of booleans, "
        "or one boolean for all four."
    )
    sliding_window: PositiveInt | None = Field(
        default=None,
        description="Each query attends only to the last sliding_window positions (Mistral). "
        "null: full attention.",
    )
    sliding_layers: list[Annotated[int, Field(strict=True, ge=0)]] | None = Field(
        default=None,
        description="The layers (indices from 0) that use sliding_window; the others attend to "
        "every position (Gemma2's alternating layer_types). null: every layer.",
    )
    qk_norm: Literal["per_head", "full_width"] | None = Field(
        default=None,
        description="A norm (the model's norm type and eps) on the queries and on the keys "
        "before the positions: per_head normalizes each head's head_width features with one "
        "gain of head_width shared by the heads (Qwen3); full_width normalizes all the heads' "
        "features of a token together, with a gain over all of them (OLMo2). null: none.",
    )
    scale: float | None = Field(
        default=None,
        gt=0,
        description="The factor on the attention logits q k^T. null: head_width^-0.5 (Gemma2: "
        "query_pre_attn_scalar^-0.5; Granite: attention_multiplier).",
    )
    softcap: float | None = Field(
        default=None,
        gt=0,
        description="Attention logit soft-capping: logits become softcap * tanh(logits / "
        "softcap) before the mask (Gemma2). null: none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_kv_heads(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kv_heads") is None:  # one key/value per query
            data = {**data, "kv_heads": data.get("heads", 1)}  # (a missing heads is reported)
        return data


class LearnedPositions(_Frozen):
    """A learned table of position embeddings added to the token embeddings."""

    type: Literal["learned"] = Field(description="Learned absolute positions.")
    offset: NonNegativeInt = Field(
        default=0,
        description="Leading rows of the table that no position reads: position p reads row "
        "p + offset, and the table has max_positions + offset rows (OPT: 2).",
    )
    padding_token: NonNegativeInt | None = Field(
        default=None,
        description="The token id of padding, where position ids count only the other tokens "
        "(RoBERTa's create_position_ids_from_input_ids): a token that is not padding reads row "
        "offset + (the number of non-padding tokens before it), a padding token reads row "
        "offset - 1 (RoBERTa: offset = padding_token + 1). null: position p reads row p + "
        "offset.",
    )


class RopeScaling(_Frozen):
    """Linear position interpolation: positions are divided by factor before rotation."""

    type: Literal["linear"] = Field(description="Only linear scaling is supported.")
    factor: float = Field(gt=0, description="Positions are divided by this factor.")


class RotaryPositions(_Frozen):
    """Rotary position embeddings (RoPE) applied to queries and keys."""

    type: Literal["rope"] = Field(description="Rotary position embeddings.")
    base: float = Field(gt=0, description="RoPE base (theta): frequencies base^(-2i/r).")
    rotated_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Fraction of each head's width that is rotated (GPT-NeoX rotary_pct, Phi "
        "partial_rotary_factor). The rotated width is int(head_width * fraction) and must be even.",
    )
    pair_layout: Literal["split_half", "adjacent"] = Field(
        default="split_half",
        description="Which dimensions form a rotated pair: split_half pairs (i, i + r/2) "
        "(Hugging Face's rotate_half); adjacent pairs (2i, 2i + 1) (the original RoPE, GPT-J).",
    )
    scaling: RopeScaling | None = Field(
        default=None, description="Optional linear position scaling; null for none."
    )
    nope_layers: list[NonNegativeInt] = Field(
        default_factory=list,
        description="Layers (0-based, increasing) that rotate nothing: their queries and keys "
        "carry no position at all (NoPE; SmolLM3's no_rope_layers). Empty: every layer rotates.",
    )


class AlibiPositions(_Frozen):
    """ALiBi: a per-head linear bias on the attention logits, no position parameters."""

    type: Literal["alibi"] = Field(description="Attention with linear biases.")
    scaled: bool = Field(
        default=False,
        description="The bias is added to q k^T before the 1/sqrt(head_width) attention scale, "
        "so the slopes are divided by sqrt(head_width) too (Falcon).",
    )


class SinusoidalPositions(_Frozen):
    """A fixed table of sines and cosines added to the token embeddings: no parameters."""

    type: Literal["sinusoidal"] = Field(description="Sinusoidal absolute positions (XGLM).")
    base: float = Field(
        default=10000.0,
        gt=1,
        description="Position p reads row n = p + offset: sin(n w_i) in the first width // 2 "
        "dims and cos(n w_i) in the next width // 2, w_i = base^(-i / (width // 2 - 1)) "
        "(tensor2tensor's layout, as transformers' XGLM); an odd width gets a zero last dim.",
    )
    offset: NonNegativeInt = Field(
        default=0,
        description="Position p reads row p + offset of the table (XGLM: 2, fairseq's "
        "padding offset).",
    )


class NoPositions(_Frozen):
    """No position information (NoPE)."""

    type: Literal["none"] = Field(description="No positional encoding.")


Positions = Annotated[
    LearnedPositions | RotaryPositions | AlibiPositions | SinusoidalPositions | NoPositions,
    Field(discriminator="type"),
]


class Experts(_Frozen):
    """A mixture of experts in place of the one MLP (Mixtral): a router and ``count`` experts,
    each an MLP of the enclosing block's form (hidden, activation, gated, bias)."""

    count: PositiveInt = Field(
        description="Number of experts E. The router is a bias-free linear map x W_router "
        "(width -> E) giving one logit per expert."
    )
    top_k: PositiveInt = Field(
        description="Experts each token uses: the k largest softmax probabilities of the router "
        "logits (softmax over all E, then top-k)."
    )
    normalize: bool = Field(
        default=True,
        description="Divide the k selected probabilities by their sum (Mixtral); false: use "
        "them as they are. The block's output is the sum over the selected experts of weight "
        "times expert output.",
    )


class MLP(_Frozen):
    """The feed-forward block."""

    hidden: PositiveInt = Field(description="Hidden width f of the MLP.")
    activation: MLPActivation = Field(
        description="Elementwise activation: relu, relu2 (squared ReLU, relu(x)^2: Nemotron), "
        "gelu (exact erf), gelu_tanh (tanh approximation), gelu_tanh_bloom (the tanh "
        "approximation with sqrt(2/pi) written as 0.79788456, BLOOM's bloom_gelu_forward), silu. "
        "The shorthands swiglu and geglu mean silu and gelu with gated: true."
    )
    gated: bool = Field(
        default=False,
        description="Gated MLP: act(x W_gate) * (x W_up), then W_down (SwiGLU, GeGLU).",
    )
    bias: bool = Field(description="Whether the MLP's linear maps carry biases.")
    experts: Experts | None = Field(
        default=None,
        description="A mixture of experts: count experts of this MLP's form and a top_k "
        "router (Mixtral); null for one dense MLP.",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        activation = data.get("activation") if isinstance(data, dict) else None
        if isinstance(activation, str) and activation in GATED_SHORTHANDS:
            if data.get("gated") is False:
                return data  # a contradiction, which the consistency checks report
            data = {**data, "activation": GATED_SHORTHANDS[data["activation"]], "gated": True}
        return data


class Embeddings(_Frozen):
    """Token embeddings, the unembedding, and what ties them."""

    tied: bool = Field(description="The unembedding is the transposed token embedding table.")
    unembedding_bias: bool = Field(
        default=False, description="The unembedding has a bias (Phi, BERT's decoder bias)."
    )
    scale: float | str = Field(
        default=1.0,
        description="Token embeddings are multiplied by this before anything else (Gemma: "
        "'sqrt(width)'). A number, or an expression in the sizes (names, numbers, + - * / ^, "
        "sqrt).",
    )
    token_types: NonNegativeInt = Field(
        default=0,
        description="Rows of a token-type embedding table (BERT: 2); 0 for none. The model's "
        "input is token ids only, so it reads type 0.",
    )
    logit_scale: float = Field(
        default=1.0,
        description="The logits are multiplied by this (Cohere: logit_scale; Granite: 1 / "
        "logits_scaling).",
    )
    logit_softcap: float | None = Field(
        default=None,
        gt=0,
        description="Final-logit soft-capping: logits become softcap * tanh(logits / softcap) "
        "(Gemma2). null: none.",
    )


class PredictionHead(_Frozen):
    """BERT's masked-LM transform before the unembedding: dense, activation, norm."""

    activation: Activation = Field(description="Activation after the dense layer.")


class Architecture(_Frozen):
    """Everything that changes a transformer's parameter count or its symmetries."""

    kind: Literal["causal_lm", "masked_lm"] = Field(
        description="causal_lm: decoder with causal attention. masked_lm: encoder with "
        "bidirectional attention."
    )
    vocab_size: PositiveInt = Field(description="Vocabulary size V.")
    max_positions: PositiveInt = Field(description="Longest sequence the model accepts.")
    width: PositiveInt = Field(description="Residual stream width d.")
    layers: PositiveInt = Field(description="Number of transformer blocks L.")
    block: Literal[
        "pre_norm",
        "post_norm",
        "parallel_one_norm",
        "parallel_two_norms",
        "sandwich",
        "post_sublayer_norm",
    ] = Field(
        description="pre_norm: x + f(norm(x)). post_norm: norm(x + f(x)) (BERT). "
        "parallel_one_norm: x + attn(n(x)) + mlp(n(x)) with one shared norm (Phi). "
        "parallel_two_norms: x + attn(n1(x)) + mlp(n2(x)) (GPT-NeoX). sandwich: x + "
        "n2(f(n1(x))), a norm before and after each sublayer (Gemma2). post_sublayer_norm: x + "
        "n(f(x)), a norm on each sublayer's output only (OLMo2)."
    )
    residual_scale: float = Field(
        default=1.0,
        description="Each sublayer's output is multiplied by this before it is added to the "
        "stream (Granite: residual_multiplier).",
    )
    norm: Norm = Field(description="The normalization layer used throughout.")
    embedding_norm: bool = Field(
        default=False, description="A norm right after the embeddings (BERT)."
    )
    final_norm: bool = Field(
        default=True, description="A norm after the last block, before the head."
    )
    attention: Attention = Field(description="The attention layers.")
    positions: Positions = Field(
        description="Position encoding: learned, rope, alibi, sinusoidal or none (selected by "
        "'type')."
    )
    mlp: MLP = Field(description="The MLP layers.")
    embeddings: Embeddings = Field(description="Token embeddings and unembedding.")
    prediction_head: PredictionHead | None = Field(
        default=None,
        description="Masked-LM prediction head (dense + activation + norm before the "
        "unembedding, BERT); null for none.",
    )


CATALOGUE_GROUPS: dict[str, str] = {
    "qk_gauge": "A1: GL(k) (RoPE commutant under RoPE) on W_Q, W_K per key/value head",
    "key_bias_shift": "A2: shift of the key bias along non-rotated dims",
    "vo_gauge": "A3: GL(k) on W_V, W_O per key/value head",
    "value_bias_fold": "A4: value bias folded into the output bias",
    "value_bias_centering": (
        "A4': a value-bias shift whose constant output lies along 1 (LayerNorm stream, no b_O)"
    ),
    "head_permutation": "A5: permutation of heads (discrete)",
    "norm_gain_scaling": "B1: a norm's gain scaled into its readers",
    "norm_bias_fold": "B2: a LayerNorm's bias folded into its readers' biases",
    "reader_centering": "B3: LayerNorm readers' columns shifted along the gain-scaled ones vector",
    "writer_centering": "B4: writer rows shifted along ones when only LayerNorms read the stream",
    "residual_rotation": "B5: orthogonal rotation of the residual stream",
    "embedding_translation": "B6: translation between embedding and position tables",
    "padding_translation": "B6': the padding token's row against the position row only it "
    "reads (positions counted over non-padding tokens, RoBERTa)",
    "unembedding_shift": "B7: per-position constant added to the logits",
    "mlp_scaling": "C1/C2: per-neuron scaling of ReLU or gated MLPs",
    "neuron_permutation": "C3: permutation of MLP neurons (discrete)",
    "router_shift": "C4: one vector added to every expert's router column (mixture of experts)",
    "unread_parameters": "parameters that the function never reads (OPT's offset rows)",
}

GroupType = Literal["GL", "O", "SO", "scaling", "translation", "permutation"]
GroupScope = Literal["model", "layer", "kv_head", "head", "neuron"]

DEFAULT_ELEMENT: dict[str, str] = {
    "GL": "A",
    "O": "Q",
    "SO": "Q",
    "scaling": "s",
    "translation": "t",
    "permutation": "P",
}


class CustomGroup(_Frozen):
    """A symmetry group declared in the spec: its type, what it is per, and its action."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Identifier of the group.")
    group: GroupType = Field(
        description="GL: invertible matrices. O / SO: orthogonal (special orthogonal) "
        "matrices. scaling: nonzero vectors acting through diag(s). translation: vectors added. "
        "permutation: permutation matrices (discrete)."
    )
    per: GroupScope = Field(
        description="One copy of the group for each: model, layer, kv_head (each key/value head "
        "of each layer), head (each query head), neuron (each MLP neuron of each layer)."
    )
    size: str | int = Field(
        description="The group element's size n (n x n matrices, length-n vectors): a number or "
        "an expression in the sizes, e.g. head_width or width - 1."
    )
    element: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the group element in the action expressions. Default: A (GL), Q "
        "(O, SO), s (scaling), t (translation), P (permutation).",
    )
    commutes_with: list[Literal["rope"]] = Field(
        default_factory=list,
        description="Restrict the group to elements commuting with these operators: 'rope' "
        "keeps the matrices that commute with every position rotation (A1 under RoPE), or the "
        "translations that every rotation fixes (A2: the non-rotated dims).",
    )
    fixes: list[Literal["ones"]] = Field(
        default_factory=list,
        description="Restrict a matrix group to elements fixing these vectors: 'ones' keeps "
        "the elements Q with 1 Q = 1 (the rotations a LayerNorm stream allows, B5).",
    )
    positive: bool = Field(
        default=False,
        description="Restrict a scaling group to positive factors (ReLU's C1 scaling).",
    )
    layers: list[Annotated[int, Field(strict=True)]] | None = Field(
        default=None,
        min_length=1,
        description="Restrict a per-layer (or finer) group to these layer indices (negative: "
        "counted from the end, -1 the last layer); null or absent: every layer where the "
        "action's relative references (layers.{i+1}.x) exist. An empty list is rejected: a "
        "group with no units acts on nothing.",
    )
    acts: dict[str, str] = Field(
        min_length=1,
        description="The action: parameter path (with '*' for the layer index, e.g. "
        "layers.*.attn.W_Q; or relative to the unit's layer i, e.g. layers.{i+1}.attn.W_Q) -> "
        "its new value as an expression. Expressions use the parameter's "
        "short name for its current value, other parameters by path (relative to the same "
        "layer first), the element, sizes, numbers, + - * / (elementwise), juxtaposition or @ "
        "(matrix product), ^T (transpose), ^-1 (inverse), ^-T, and the functions diag, ones, "
        "eye, kron, sqrt, sum.",
    )


CatalogueName = Literal[tuple(CATALOGUE_GROUPS)]  # type: ignore[valid-type]

SymmetryItem = Annotated[
    Annotated[CatalogueName, Tag("catalogue")] | Annotated[CustomGroup, Tag("custom")],
    Discriminator(lambda v: "catalogue" if isinstance(v, str) else "custom"),
    Field(
        description="A catalogue group by name, or a custom group (a mapping with name, group, "
        "per, size, acts)."
    ),
]

SymmetryList = Annotated[
    Annotated[Literal["auto"], Tag("auto")] | Annotated[list[SymmetryItem], Tag("list")],
    Discriminator(lambda v: "auto" if isinstance(v, str) else "list"),
]


HFModelType = Literal[
    "gpt2",
    "bert",
    "llama",
    "mistral",
    "qwen2",
    "gpt_neox",
    "phi",
    "opt",
    "gemma",
    # section norms
    "qwen3",
    "olmo2",
    "granite",
    "gemma2",
    "cohere",
    # section moe
    "mixtral",
    # section positions
    "nemotron",
    "smollm3",
    "xglm",
    "roberta",
    # plain families
    "starcoder2",
    "gpt_bigcode",
    "phi3",
    "stablelm",
    "gptj",
    "falcon",
    "mpt",
    "bloom",
]


class Spec(_Frozen):
    """A symcomp spec: one transformer architecture and the symmetries to reduce."""

    spec_version: Literal[1] = Field(
        default=SPEC_VERSION, description="Version of the spec language; only 1 exists."
    )
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Name of the model; used for the generated package.",
    )
    description: str = Field(default="", description="Free text, for people.")
    hf_model_type: HFModelType | None = Field(
        default=None,
        description="The transformers model_type this architecture is (import-hf writes it); "
        "the generated package then documents its Hugging Face parameter names.",
    )
    architecture: Architecture = Field(description="The transformer's architecture.")
    symmetries: SymmetryList = Field(
        default="auto",
        description="'auto' to derive and reduce every exact symmetry, or a list of catalogue "
        "group names and custom groups to reduce.",
    )
