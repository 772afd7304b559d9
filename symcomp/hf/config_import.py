"""Import a Hugging Face ``config.json`` as a symcomp spec, reading the JSON directly.

transformers is never imported: the file is parsed by :func:`symcomp.spec.source.read_json`, which
keeps every key's line and column, so an error points into the config. Each supported
``model_type`` has one small builder that maps the config's keys onto the spec's architecture,
using the defaults that the transformers 5 configuration and modeling code apply when a key is
absent (checked against ``transformers/models/<family>/{configuration,modeling}_<family>.py``).

Nothing is approximated: a key whose value would change the function in a way a spec cannot
express is an error naming it, and so is any key that is neither read by the family's builder
nor known to leave the function unchanged (token ids, dropout, dtype, cache, generation
settings, ...). The core sizes (vocabulary, width, layers, heads, MLP width, positions) are
required even where transformers would fall back to a class default: a config without them does
not describe a particular model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symcomp.errors import ImportHFError, KeyPath, Location, Problem, SpecError, format_key_path
from symcomp.spec.loader import spec_from_source
from symcomp.spec.model import Spec
from symcomp.spec.source import Source, read_json

CONFIG_FILE = "config.json"
_NO_DEFAULT: Any = object()


def import_hf_config(path: str | Path, name: str | None = None) -> Spec:
    """Read a Hugging Face ``config.json`` (or a directory holding one) and return its spec.

    ``name`` is the spec's name; by default the config's directory name (or the file's stem when
    the file is not called ``config.json``), made to fit the spec's name pattern. Raises
    :class:`ImportHFError` (a :class:`SpecError`) for unreadable or malformed input and for
    anything not supported.
    """
    try:
        return _import_hf_config(path, name)
    except SpecError as exc:
        raise ImportHFError(exc.problems) from None


def _import_hf_config(path: str | Path, name: str | None) -> Spec:
    file = _config_file(Path(path))
    source = read_json(file)
    if not isinstance(source.data, dict):
        raise source.error(
            "a config.json must hold a JSON object",
            (),
            found=type(source.data).__name__,
            accepted="an object",
        )
    config = _Config(source)
    model_type = _model_type(config)
    family = FAMILIES[model_type]
    architecture = family.build(config)
    _check_common(config)
    config.reject_unknown(model_type, family.ignored)
    data = {
        "name": name if name is not None else default_name(file),
        "description": f"Imported from the Hugging Face config {file} (model_type {model_type}).",
        "hf_model_type": model_type,
        "architecture": architecture,
        "symmetries": "auto",
    }
    return _validate(data, source)


def _config_file(path: Path) -> Path:
    if path.is_dir():
        file = path / CONFIG_FILE
        if not file.is_file():
            raise SpecError.at(
                f"the directory holds no {CONFIG_FILE}",
                file=str(path),
                accepted=f"a {CONFIG_FILE} file, or a directory holding one",
            )
        return file
    return path  # a missing file is reported by read_json


def default_name(file: Path) -> str:
    """The spec name for a config file: its directory's name for ``config.json``, else its stem."""
    stem = file.resolve().parent.name if file.name == CONFIG_FILE else file.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("_.-")
    return name or "imported"


# --- reading the config ----------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Config:
    """The parsed config plus the keys a builder has read (the rest go to the unknown-key check).

    Getters treat a null value like an absent key (transformers then applies its default), except
    :meth:`raw`, for the few keys where null has its own meaning.
    """

    def __init__(self, source: Source):
        self.source = source
        self.data: dict[str, Any] = source.data
        self.read: set[str] = set()
        self.model_type = ""

    def error(
        self, message: str, path: KeyPath, found: str | None = None, accepted: str | None = None
    ) -> SpecError:
        return self.source.error(message, path, found=found, accepted=accepted)

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as written (null included), or ``default`` when the key is absent."""
        self.read.add(key)
        return self.data.get(key, default)

    def present(self, key: str) -> bool:
        self.read.add(key)
        return self.data.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw(key)
        return default if value is None else value

    def first(self, keys: Iterable[str], default: Any = _NO_DEFAULT) -> tuple[Any, KeyPath]:
        """The value of the first of ``keys`` that is set (aliases must agree), and its path."""
        keys = tuple(keys)
        found = [(key, self.data[key]) for key in keys if self.present(key)]
        if not found:
            if default is _NO_DEFAULT:
                accepted = " or ".join(keys) if len(keys) > 1 else None
                raise self.error("required key is missing", (keys[0],), accepted=accepted)
            return default, (keys[0],)
        key, value = found[0]
        for other, other_value in found[1:]:
            if other_value != value:
                raise self.error(
                    f"{key} and {other} are aliases but disagree",
                    (other,),
                    found=f"{key}: {value!r}, {other}: {other_value!r}",
                    accepted="equal values, or only one of them",
                )
        return value, (key,)

    def integer(self, *keys: str, default: Any = _NO_DEFAULT) -> int:
        value, path = self.first(keys, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error("expected an integer", path, found=_short(value))
        return value

    def optional_integer(self, key: str, default: int | None) -> int | None:
        """Like :meth:`integer`, but absent or null with no default gives None."""
        if not self.present(key) and default is None:
            return None
        return self.integer(key, default=default)

    def number(self, key: str, default: Any = _NO_DEFAULT) -> float:
        value, path = self.first((key,), default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("expected a number", path, found=_short(value))
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value, path = self.first((key,), default)
        if not isinstance(value, bool):
            raise self.error("expected true or false", path, found=_short(value))
        return value

    def text(self, key: str, default: Any = _NO_DEFAULT) -> str:
        value, path = self.first((key,), default)
        if not isinstance(value, str):
            raise self.error("expected a string", path, found=_short(value))
        return value

    def require(self, key: str, expected: Any, message: str) -> None:
        """``key`` must be absent, null or ``expected``: any other value is unsupported."""
        value = self.get(key, expected)
        if type(value) is not type(expected) or value != expected:
            raise self.error(message, (key,), found=_short(value), accepted=repr(expected))

    def reject_unknown(self, model_type: str, ignored: frozenset[str]) -> None:
        """Every set key must have been read or be known not to change the function."""
        problems = [
            self.error(
                f"key not known for model_type '{model_type}': symcomp cannot tell whether it "
                "changes the function, so it does not guess",
                (key,),
                found=_short(value),
                accepted="only the keys this importer knows for the model_type",
            ).first
            for key, value in self.data.items()
            if value is not None
            and key not in self.read
            and key not in ignored
            and not _never_changes_function(key)
        ]
        if problems:
            raise SpecError(problems)


# Keys of transformers' PreTrainedConfig (and of older versions) that cannot change the function
# of the language model: bookkeeping, output flags, heads for other tasks, generation settings.
COMMON_IGNORED = frozenset(
    {
        "model_type", "architectures", "_name_or_path", "_commit_hash", "transformers_version",
        "torch_dtype", "dtype", "use_bfloat16", "use_cache", "torchscript", "tf_legacy_loss",
        "gradient_checkpointing", "initializer_range", "initializer_factor", "init_std",
        "output_attentions", "output_hidden_states", "return_dict", "use_return_dict",
        "_attn_implementation", "_attn_implementation_autoset", "attn_implementation",
        "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
        "task_specific_params", "tokenizer_class", "prefix", "tie_encoder_decoder",
        # feed-forward chunking over the sequence computes the same values
        "chunk_size_feed_forward",
        # generation settings (PreTrainedConfig of transformers 4 saved them all)
        "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
        "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
        "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
        "return_dict_in_generate", "remove_invalid_values", "exponential_decay_length_penalty",
        "suppress_tokens", "begin_suppress_tokens",
    }
)  # fmt: skip


def _never_changes_function(key: str) -> bool:
    # Token ids only matter to tokenizers and generation; dropout is off at inference.
    return (
        key in COMMON_IGNORED
        or key.endswith(("_token_id", "_token_ids"))
        or "dropout" in key
        or key.endswith("_pdrop")
    )


def _model_type(config: _Config) -> str:
    accepted = ", ".join(FAMILIES)
    value, path = config.first(("model_type",), None)
    if value is None:
        raise config.error("required key is missing", ("model_type",), accepted=accepted)
    if value not in FAMILIES:
        raise config.error("unsupported model_type", path, found=_short(value), accepted=accepted)
    config.model_type = value
    return value


def _check_common(c: _Config) -> None:
    """Generic PreTrainedConfig switches that would add layers a spec cannot describe."""
    c.require("is_encoder_decoder", False, "encoder-decoder models are not supported")
    c.require("add_cross_attention", False, "cross-attention layers are not supported")
    if c.present("cross_attention_hidden_size"):
        raise c.error(
            "cross-attention layers are not supported",
            ("cross_attention_hidden_size",),
            found=_short(c.data["cross_attention_hidden_size"]),
            accepted="null",
        )
    if c.get("pruned_heads", {}):
        raise c.error(
            "pruned heads (a different number of heads per layer) are not supported",
            ("pruned_heads",),
            found=_short(c.data["pruned_heads"]),
            accepted="{}",
        )


# --- shared pieces ---------------------------------------------------------------------------

# transformers' ACT2FN names -> the spec's activations. gelu_new and gelu_pytorch_tanh are both
# the tanh approximation; "gelu" is the exact erf form; swish is torch's SiLU.
ACTIVATIONS: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def _activation(c: _Config, key: str, default: str, table: dict[str, str] = ACTIVATIONS) -> str:
    name = c.text(key, default)
    if name not in table:
        raise c.error(
            "activation not supported", (key,), found=_short(name), accepted=", ".join(table)
        )
    return table[name]


def _sizes(
    c: _Config,
    width: tuple[str, ...] = ("hidden_size",),
    layers: tuple[str, ...] = ("num_hidden_layers",),
    positions: tuple[str, ...] = ("max_position_embeddings",),
) -> dict[str, Any]:
    return {
        "vocab_size": c.integer("vocab_size"),
        "max_positions": c.integer(*positions),
        "width": c.integer(*width),
        "layers": c.integer(*layers),
    }


def _layernorm(c: _Config, key: str, default: float) -> dict[str, Any]:
    return {"type": "layernorm", "eps": c.number(key, default)}


def _attention(
    c: _Config,
    *,
    bias: bool | dict[str, bool],
    kv_default: int | None = None,
    head_dim_default: int | None = None,
    sliding_window: int | None = None,
) -> dict[str, Any]:
    """Grouped-query attention as the Llama-style modeling code builds it.

    ``num_key_value_heads`` defaults to the head count; ``head_dim`` (read with ``getattr`` by the
    Llama, Mistral, Qwen2, Phi and Gemma code) defaults to width / heads, left for the spec loader
    to fill in so that a width the heads do not divide is reported.
    """
    heads = c.integer("num_attention_heads")
    out: dict[str, Any] = {
        "heads": heads,
        "kv_heads": c.integer("num_key_value_heads", default=kv_default or heads),
        "bias": bias,
        "sliding_window": sliding_window,
    }
    head_dim = c.optional_integer("head_dim", head_dim_default)
    if head_dim is not None:
        out["head_width"] = head_dim
    return out


# --- RoPE --------------------------------------------------------------------------------------

# Keys a RoPE dict (rope_parameters, or transformers 4's rope_scaling) may carry.
_ROPE_KEYS = frozenset({"rope_type", "type", "rope_theta", "partial_rotary_factor", "factor"})
_ROPE_TYPES = "default, linear"


@dataclass(frozen=True)
class _RopeKeys:
    """Where a family keeps its RoPE settings at the top level, and its defaults."""

    theta: tuple[str, ...] = ("rope_theta",)
    fraction: tuple[str, ...] = ("partial_rotary_factor",)
    default_fraction: float = 1.0
    # Llama, Mistral, Qwen2 and Gemma size the rotation from head_dim alone: they ignore
    # partial_rotary_factor (and would break on a value below 1), so only 1 is accepted.
    partial: bool = True


def _rope(c: _Config, keys: _RopeKeys) -> dict[str, Any]:
    """RoPE from either layout: top-level keys (transformers 4) or ``rope_parameters`` (5).

    The two layouts may be mixed (transformers merges them), but a setting given in both places
    must agree. All nine families pair dimensions as rotate_half does (split_half).
    """
    params, where = _rope_dict(c)
    out: dict[str, Any] = {
        "type": "rope",
        "base": _rope_number(c, params, where, "rope_theta", keys.theta, 10000.0),
        "rotated_fraction": _rope_fraction(c, params, where, keys),
        "pair_layout": "split_half",
    }
    scaling = _rope_scaling(c, params, where)
    if scaling is not None:
        out["scaling"] = scaling
    return out


def _rope_dict(c: _Config) -> tuple[dict[str, Any], str | None]:
    """The RoPE dict and its key; transformers 5 lets rope_scaling replace rope_parameters."""
    given = [key for key in ("rope_parameters", "rope_scaling") if c.present(key)]
    if len(given) > 1:
        raise c.error(
            "both rope_parameters and rope_scaling are set",
            ("rope_scaling",),
            accepted="one of them (rope_parameters in transformers 5)",
        )
    if not given:
        return {}, None
    where = given[0]
    params = c.data[where]
    if not isinstance(params, dict):
        raise c.error("expected an object", (where,), found=_short(params))
    for key, value in params.items():
        if key not in _ROPE_KEYS and value is not None:
            raise c.error(
                "RoPE setting not supported",
                (where, key),
                found=_short(value),
                accepted=", ".join(sorted(_ROPE_KEYS)),
            )
    return params, where


def _rope_number(
    c: _Config,
    params: dict[str, Any],
    where: str | None,
    key: str,
    aliases: tuple[str, ...],
    default: float,
) -> float:
    found: list[tuple[KeyPath, Any]] = []
    if where is not None and params.get(key) is not None:
        found.append(((where, key), params[key]))
    found += [((alias,), c.data[alias]) for alias in aliases if c.present(alias)]
    if not found:
        return default
    path, value = found[0]
    for other, other_value in found:
        if isinstance(other_value, bool) or not isinstance(other_value, int | float):
            raise c.error("expected a number", other, found=_short(other_value))
        if other_value != value:
            raise c.error(
                f"{format_key_path(path)} and {format_key_path(other)} disagree",
                other,
                found=f"{value!r} and {other_value!r}",
                accepted="equal values, or only one of them",
            )
    return float(value)


def _rope_fraction(c: _Config, params: dict[str, Any], where: str | None, keys: _RopeKeys) -> float:
    fraction = _rope_number(
        c, params, where, "partial_rotary_factor", keys.fraction, keys.default_fraction
    )
    if not keys.partial and fraction != 1.0:
        path = (where, "partial_rotary_factor") if where else (keys.fraction[0],)
        raise c.error(
            f"transformers' {c.model_type} code rotates the whole head: it does not implement "
            "partial rotation",
            path,
            found=repr(fraction),
            accepted="1.0, or no partial_rotary_factor",
        )
    return fraction


def _rope_scaling(c: _Config, params: dict[str, Any], where: str | None) -> dict[str, Any] | None:
    """'default' -> no scaling, 'linear' -> positions divided by factor, anything else: error."""
    kind = _rope_type(c, params, where)
    factor = params.get("factor")
    if kind == "default":
        if factor is not None:
            raise c.error(
                "rope_type 'default' takes no factor",
                (where or "rope_parameters", "factor"),
                found=_short(factor),
                accepted="rope_type 'linear' with a factor, or no factor",
            )
        return None
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise c.error(
            "linear RoPE scaling needs a numeric factor",
            (where or "rope_parameters", "factor"),
            found=_short(factor),
            accepted="a positive number",
        )
    return {"type": "linear", "factor": float(factor)}


def _rope_type(c: _Config, params: dict[str, Any], where: str | None) -> str:
    # transformers 4 wrote "type", transformers 5 writes "rope_type".
    given = [(key, params[key]) for key in ("rope_type", "type") if params.get(key) is not None]
    if len(given) == 2 and given[0][1] != given[1][1]:
        raise c.error(
            "rope_type and type disagree",
            (where or "rope_parameters", "type"),
            found=f"{given[0][1]!r} and {given[1][1]!r}",
        )
    key, kind = given[0] if given else ("rope_type", "default")
    if kind not in ("default", "linear"):
        raise c.error(
            f"RoPE type not supported ({key} {kind!r})",
            (where or "rope_parameters", key),
            found=_short(kind),
            accepted=_ROPE_TYPES,
        )
    return kind


# --- the families ----------------------------------------------------------------------------


def _gpt2(c: _Config) -> dict[str, Any]:
    c.require(
        "scale_attn_weights",
        True,
        "attention without the 1/sqrt(head width) scale is not supported",
    )
    c.require(
        "scale_attn_by_inverse_layer_idx",
        False,
        "a per-layer attention scale 1/(layer + 1) is not supported",
    )
    sizes = _sizes(c, ("n_embd", "hidden_size"), ("n_layer", "num_hidden_layers"), _GPT2_POS)
    _gpt2_n_ctx(c, sizes["max_positions"])
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm",
        "norm": _layernorm(c, "layer_norm_epsilon", 1e-5),
        "attention": {"heads": c.integer("n_head", "num_attention_heads"), "bias": True},
        "positions": {"type": "learned"},
        "mlp": {
            # GPT2Block: inner_dim = n_inner if set, else 4 * width.
            "hidden": c.integer("n_inner", default=4 * sizes["width"]),
            "activation": _activation(c, "activation_function", "gelu_new"),
            "bias": True,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


_GPT2_POS = ("n_positions", "max_position_embeddings")


def _gpt2_n_ctx(c: _Config, positions: int) -> None:
    # n_ctx is a legacy twin of n_positions that current transformers no longer reads; older
    # versions sized the causal mask with it, so a different value is refused.
    n_ctx = c.get("n_ctx", positions)
    if n_ctx != positions:
        raise c.error(
            "n_ctx differs from n_positions",
            ("n_ctx",),
            found=_short(n_ctx),
            accepted=str(positions),
        )


def _bert(c: _Config) -> dict[str, Any]:
    c.require("is_decoder", False, "BERT as a causal decoder is not supported (masked LM only)")
    c.require(
        "position_embedding_type", "absolute", "relative position embeddings are not supported"
    )
    activation = _activation(c, "hidden_act", "gelu")
    return {
        "kind": "masked_lm",
        **_sizes(c),
        "block": "post_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-12),
        "embedding_norm": True,
        "final_norm": False,
        "attention": {"heads": c.integer("num_attention_heads"), "bias": True},
        "positions": {"type": "learned"},
        "mlp": {"hidden": c.integer("intermediate_size"), "activation": activation, "bias": True},
        "embeddings": {
            "tied": c.flag("tie_word_embeddings", True),
            "unembedding_bias": True,
            "token_types": c.integer("type_vocab_size", default=2),
        },
        # BertPredictionHeadTransform: dense, ACT2FN[hidden_act], LayerNorm(layer_norm_eps).
        "prediction_head": {"activation": activation},
    }


def _llama_like(
    c: _Config,
    *,
    attention: dict[str, Any],
    mlp_bias: bool,
    tied_default: bool = False,
    norm: dict[str, Any] | None = None,
    activation: str | None = None,
) -> dict[str, Any]:
    """Pre-RMSNorm decoder with a gated MLP: act(x W_gate) * (x W_up), then W_down."""
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "pre_norm",
        "norm": norm or {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6)},
        "attention": attention,
        "positions": _rope(c, _RopeKeys(partial=False)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": activation or _activation(c, "hidden_act", "silu"),
            "gated": True,
            "bias": mlp_bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", tied_default)},
    }


def _llama(c: _Config) -> dict[str, Any]:
    # attention_bias covers q, k, v and o alike; mlp_bias the three MLP projections.
    attention = _attention(c, bias=c.flag("attention_bias", False))
    return _llama_like(c, attention=attention, mlp_bias=c.flag("mlp_bias", False))


def _sliding_window(c: _Config) -> int | None:
    # MistralConfig and Qwen2Config default sliding_window to 4096 when the key is absent; an
    # explicit null means full attention.
    if c.raw("sliding_window", 4096) is None:
        return None
    return c.integer("sliding_window", default=4096)


def _mistral(c: _Config) -> dict[str, Any]:
    attention = _attention(c, bias=False, sliding_window=_sliding_window(c))
    return _llama_like(c, attention=attention, mlp_bias=False)


def _qwen2(c: _Config) -> dict[str, Any]:
    # Qwen2Attention: q, k, v projections with bias, o_proj without.
    bias = {"q": True, "k": True, "v": True, "o": False}
    attention = _attention(c, bias=bias, sliding_window=_qwen2_window(c))
    return _llama_like(c, attention=attention, mlp_bias=False)


def _qwen2_window(c: _Config) -> int | None:
    """Qwen2's window applies only with use_sliding_window, and only to some layers.

    Layers are 'sliding_attention' from index max_window_layers on, unless layer_types lists
    them. A spec has one window for every layer, so a mix of both kinds is refused.
    """
    use = c.flag("use_sliding_window", False)
    window = _sliding_window(c)
    max_window_layers = c.integer("max_window_layers", default=28)
    layers = c.integer("num_hidden_layers")
    types = c.get("layer_types") or [
        "sliding_attention" if i >= max_window_layers else "full_attention" for i in range(layers)
    ]
    if not use or window is None:
        return None  # Qwen2Config sets sliding_window to None without use_sliding_window
    valid = isinstance(types, list) and all(isinstance(t, str) for t in types)
    kinds = set(types) if valid else set()
    if not kinds or not kinds <= {"full_attention", "sliding_attention"}:
        raise c.error(
            "layer types not supported",
            ("layer_types",),
            found=_short(types),
            accepted="a list of 'full_attention' and 'sliding_attention'",
        )
    if len(kinds) > 1:
        raise c.error(
            "a sliding window on some layers only is not supported",
            ("layer_types",) if c.present("layer_types") else ("max_window_layers",),
            found=_short(types),
            accepted="every layer sliding (max_window_layers 0) or none",
        )
    return window if kinds == {"sliding_attention"} else None


def _gpt_neox(c: _Config) -> dict[str, Any]:
    # use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)); otherwise two pre-norm residuals.
    parallel = c.flag("use_parallel_residual", True)
    # GPT-NeoX keeps its RoPE settings as rotary_emb_base and rotary_pct (default 0.25).
    rope = _RopeKeys(theta=("rotary_emb_base",), fraction=("rotary_pct",), default_fraction=0.25)
    return {
        "kind": "causal_lm",
        **_sizes(c),
        "block": "parallel_two_norms" if parallel else "pre_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-5),
        # attention_bias covers the fused query_key_value and the dense output projection.
        "attention": {
            "heads": c.integer("num_attention_heads"),
            "bias": c.flag("attention_bias", True),
        },
        "positions": _rope(c, rope),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "gelu"),
            "bias": True,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", False)},
    }


def _phi(c: _Config) -> dict[str, Any]:
    c.require(
        "qk_layernorm", False, "Phi's qk_layernorm (norms on queries and keys) is not supported"
    )
    return {
        "kind": "causal_lm",
        **_sizes(c),
        # PhiDecoderLayer: one input_layernorm feeds both attention and MLP.
        "block": "parallel_one_norm",
        "norm": _layernorm(c, "layer_norm_eps", 1e-5),
        "attention": _attention(c, bias=True),
        # PhiConfig defaults partial_rotary_factor to 0.5 when absent.
        "positions": _rope(c, _RopeKeys(default_fraction=0.5)),
        "mlp": {
            "hidden": c.integer("intermediate_size"),
            "activation": _activation(c, "hidden_act", "gelu_new"),
            "bias": True,
        },
        # PhiForCausalLM's lm_head has a bias.
        "embeddings": {"tied": c.flag("tie_word_embeddings", False), "unembedding_bias": True},
    }


def _opt(c: _Config) -> dict[str, Any]:
    sizes = _sizes(c)
    _opt_checks(c, sizes["width"])
    pre = c.flag("do_layer_norm_before", True)
    # OPTDecoder builds final_layer_norm only for pre-norm models without _remove_final_layer_norm.
    final = c.flag("_remove_final_layer_norm", False) is False and pre
    # enable_bias switches the attention and MLP biases; the LayerNorms keep theirs.
    bias = c.flag("enable_bias", True)
    return {
        "kind": "causal_lm",
        **sizes,
        "block": "pre_norm" if pre else "post_norm",
        # OPT builds nn.LayerNorm without an eps argument: PyTorch's 1e-5, with no config key.
        "norm": {"type": "layernorm", "eps": 1e-5},
        "final_norm": final,
        "attention": {"heads": c.integer("num_attention_heads"), "bias": bias},
        # OPTLearnedPositionalEmbedding reads row position + 2; rows 0 and 1 are never read.
        "positions": {"type": "learned", "offset": 2},
        "mlp": {
            "hidden": c.integer("ffn_dim"),
            "activation": _activation(c, "activation_function", "relu"),
            "bias": bias,
        },
        "embeddings": {"tied": c.flag("tie_word_embeddings", True)},
    }


def _opt_checks(c: _Config, width: int) -> None:
    proj = c.integer("word_embed_proj_dim", default=width)
    if proj != width:
        raise c.error(
            "word_embed_proj_dim differs from hidden_size: the projections into and out of a "
            "narrower embedding are not supported",
            ("word_embed_proj_dim",),
            found=str(proj),
            accepted=f"{width} (hidden_size) or null",
        )
    c.require(
        "layer_norm_elementwise_affine",
        True,
        "LayerNorms without a gain and bias are not supported",
    )


def _gemma(c: _Config) -> dict[str, Any]:
    c.require(
        "use_bidirectional_attention", False, "bidirectional Gemma attention is not supported"
    )
    # GemmaConfig's defaults: 16 key/value heads and head_dim 256 (not width / heads).
    attention = _attention(
        c, bias=c.flag("attention_bias", False), kv_default=16, head_dim_default=256
    )
    # GemmaRMSNorm multiplies by (1 + weight).
    norm = {"type": "rmsnorm", "eps": c.number("rms_norm_eps", 1e-6), "gain": "one_plus_w"}
    arch = _llama_like(
        c,
        attention=attention,
        mlp_bias=False,
        tied_default=True,
        norm=norm,
        activation=_gemma_activation(c),
    )
    # GemmaModel multiplies the token embeddings by sqrt(hidden_size).
    arch["embeddings"]["scale"] = "sqrt(width)"
    return arch


# Gemma's checkpoints write hidden_act "gelu" but were trained with the tanh approximation;
# transformers 5 maps it to gelu_pytorch_tanh (GemmaConfig.__post_init__).
_GEMMA_ACTIVATIONS = {**ACTIVATIONS, "gelu": "gelu_tanh"}


def _gemma_activation(c: _Config) -> str:
    """transformers 5 reads hidden_act; transformers 4 read hidden_activation. They must agree."""
    current = _activation(c, "hidden_act", "gelu_pytorch_tanh", _GEMMA_ACTIVATIONS)
    if c.present("hidden_activation"):
        legacy = _activation(c, "hidden_activation", "gelu_pytorch_tanh")
        if legacy != current:
            raise c.error(
                "hidden_activation (read by transformers 4) and hidden_act (read by "
                "transformers 5) give different activations",
                ("hidden_activation",),
                found=f"{legacy} and {current}",
                accepted="values naming the same activation",
            )
    return current


@dataclass(frozen=True)
class Family:
    """How to import one model_type: a builder and the family's keys that change nothing."""

    build: Callable[[_Config], dict[str, Any]]
    ignored: frozenset[str] = frozenset()


# Decoder-only families never read is_decoder: their attention is always causal.
_CAUSAL = frozenset({"is_decoder"})

FAMILIES: dict[str, Family] = {
    # summary_*: GPT2DoubleHeadsModel's classification head only; reorder_and_upcast_attn
    # computes the same scaled scores in float32 (precision only, not a different function).
    "gpt2": Family(
        _gpt2,
        _CAUSAL
        | {
            "summary_type",
            "summary_use_proj",
            "summary_activation",
            "summary_proj_to_labels",
            "reorder_and_upcast_attn",
        },
    ),
    "bert": Family(_bert),
    # pretraining_tp: transformers 4 sliced the same matmuls for tensor parallelism (same
    # function); transformers 5 no longer reads it.
    "llama": Family(_llama, _CAUSAL | {"pretraining_tp"}),
    "mistral": Family(_mistral, _CAUSAL),
    "qwen2": Family(_qwen2, _CAUSAL),
    "gpt_neox": Family(_gpt_neox, _CAUSAL),
    "phi": Family(_phi, _CAUSAL),
    # layerdrop skips layers during training only.
    "opt": Family(_opt, _CAUSAL | {"layerdrop"}),
    "gemma": Family(_gemma, _CAUSAL),
}


# --- validation, with errors pointing into the config ----------------------------------------

# Spec path (under architecture) -> the config keys it may come from, most specific first.
_ORIGINS: dict[tuple[str, ...], tuple[KeyPath, ...]] = {
    ("vocab_size",): (("vocab_size",),),
    ("max_positions",): (("max_position_embeddings",), ("n_positions",)),
    ("width",): (("hidden_size",), ("n_embd",)),
    ("layers",): (("num_hidden_layers",), ("n_layer",)),
    ("attention", "heads"): (("num_attention_heads",), ("n_head",)),
    ("attention", "kv_heads"): (("num_key_value_heads",), ("num_attention_heads",)),
    ("attention", "head_width"): (("head_dim",),),
    ("attention", "sliding_window"): (("sliding_window",),),
    ("positions", "base"): (
        ("rope_parameters", "rope_theta"),
        ("rope_theta",),
        ("rotary_emb_base",),
    ),
    ("positions", "rotated_fraction"): (
        ("rope_parameters", "partial_rotary_factor"),
        ("partial_rotary_factor",),
        ("rotary_pct",),
        ("head_dim",),
    ),
    ("positions", "scaling"): (("rope_parameters", "factor"), ("rope_scaling", "factor")),
    ("norm", "eps"): (("layer_norm_eps",), ("layer_norm_epsilon",), ("rms_norm_eps",)),
    ("mlp", "hidden"): (("intermediate_size",), ("n_inner",), ("ffn_dim",)),
    ("embeddings", "token_types"): (("type_vocab_size",),),
}


def _validate(data: dict[str, Any], source: Source) -> Spec:
    try:
        return spec_from_source(Source(data, source.file, {}, {}))
    except SpecError as exc:
        raise SpecError([_into_config(p, source) for p in exc.problems]) from None


def _has(data: Any, path: KeyPath) -> bool:
    for part in path:
        if not isinstance(data, dict) or data.get(part) is None:
            return False
        data = data[part]
    return True


def _origin(spec_path: KeyPath, data: dict[str, Any]) -> KeyPath | None:
    rest = tuple(str(p) for p in spec_path[1:]) if spec_path[:1] == ("architecture",) else ()
    while rest:
        for candidate in _ORIGINS.get(rest, ()):
            if _has(data, candidate):
                return candidate
        rest = rest[:-1]
    return None


def _into_config(problem: Problem, source: Source) -> Problem:
    """Re-locate a problem of the generated spec at the config key it came from."""
    origin = _origin(problem.key_path, source.data)
    path = origin if origin is not None else ()
    line, column = source.position(path)
    return Problem(
        f"{problem.message} (in the imported spec at {format_key_path(problem.key_path)})",
        Location(source.file, line, column),
        path,
        problem.found,
        problem.accepted,
    )
