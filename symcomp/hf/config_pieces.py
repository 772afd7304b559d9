"""What several families' builders share: activations, the core sizes, LayerNorm, Llama-style
attention, and RoPE from either layout (transformers 4's top-level keys, transformers 5's
``rope_parameters``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from symcomp.errors import KeyPath, format_key_path
from symcomp.hf.config_reader import _Config, _short

# --- shared pieces ---------------------------------------------------------------------------

# transformers' ACT2FN names -> the spec's activations. gelu_new and gelu_pytorch_tanh are both
# the tanh approximation; "gelu" is the exact erf form; swish is torch's SiLU.
ACTIVATIONS: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "relu2": "relu2",
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
    positions_default: int | None = None,
) -> dict[str, Any]:
    """The core sizes, all required except the position limit where a family's configuration
    class gives one (``positions_default``) and released configs leave it out."""
    if positions_default is None:
        max_positions = c.integer(*positions)
    else:
        max_positions = c.integer(*positions, default=positions_default)
    return {
        "vocab_size": c.integer("vocab_size"),
        "max_positions": max_positions,
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
    default_theta: float = 10000.0
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
        "base": _rope_number(c, params, where, "rope_theta", keys.theta, keys.default_theta),
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
