"""What every generated ``model.py`` builds its modules from: the check of its sizes, the
parameter factories, and the head and position ops its forwards call.

The model file keeps what is particular to its spec (the sizes, one class per block, the forwards
with their shapes); these are the same in every package.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NUMERICS",
    "alibi_slopes",
    "merge_heads",
    "ones",
    "rms_norm",
    "rope",
    "sizes_of",
    "split_heads",
    "use_numerics",
    "weight",
    "windowed",
    "zeros",
]

Numerics = Literal["symcomp", "transformers"]
NUMERICS: tuple[str, ...] = ("symcomp", "transformers")
"""How a model rounds: ``"symcomp"`` computes everything in the model's dtype (RoPE's angles in
float64 for a float64 model, else float32); ``"transformers"`` keeps transformers' float32
islands whatever the dtype: RMSNorm's arithmetic in float32 (its gain applied after the cast
back, or in float32 as ``1 + w`` where the gain is stored as ``w``) and RoPE's angles in float32
(a linear scaling divides the frequencies, not the positions). A float64 model in ``"symcomp"``
numerics matches transformers with those islands patched to float64 (1e-10); in
``"transformers"`` numerics, stock transformers in float64 and in float32 alike."""

S = TypeVar("S")


def sizes_of(
    cls: type[S],
    defaults: dict[str, int],
    overrides: dict[str, int],
    *,
    kv_heads_follow_heads: bool,
) -> S:
    """``cls`` (a sizes dataclass) with ``defaults`` updated by ``overrides``: TypeError for an
    unknown key, ValueError unless every size is a positive integer, kv_heads divides heads and
    the rotated width (where ``cls`` has ``rotary_width``) is even and >= 2.

    ``kv_heads_follow_heads`` (multi-head attention): kv_heads is heads unless it is given."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults)
        raise TypeError(f"unknown size(s) {', '.join(unknown)}; Model accepts {accepted}")
    if kv_heads_follow_heads:
        overrides = {"kv_heads": overrides.get("heads", defaults["heads"]), **overrides}
    sizes: Any = cls(**{**defaults, **overrides})
    for key, value in vars(sizes).items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")
    if sizes.heads % sizes.kv_heads:
        raise ValueError(f"kv_heads ({sizes.kv_heads}) must divide heads ({sizes.heads})")
    rotary = getattr(sizes, "rotary_width", None)
    if rotary is not None and (rotary < 2 or rotary % 2):
        raise ValueError(f"the rotary width ({rotary}) must be even and >= 2")
    return sizes


# --- parameters -------------------------------------------------------------------------------


def weight(*shape: int, **factory: Any) -> nn.Parameter:
    """A matrix or embedding table, drawn from N(0, 0.02^2)."""
    return nn.Parameter(nn.init.normal_(torch.empty(shape, **factory), std=0.02))


def zeros(*shape: int, **factory: Any) -> nn.Parameter:
    """A bias (or a gain stored as 1 + gain) at its neutral value."""
    return nn.Parameter(torch.zeros(shape, **factory))


def ones(*shape: int, **factory: Any) -> nn.Parameter:
    """A gain at its neutral value."""
    return nn.Parameter(torch.ones(shape, **factory))


# --- ops --------------------------------------------------------------------------------------


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, heads * k) -> (B, heads, T, k): head j is columns j k .. (j + 1) k - 1."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, T, k) -> (B, T, heads * k)."""
    return x.transpose(1, 2).flatten(2)


def use_numerics(model: nn.Module, numerics: Numerics) -> nn.Module:
    """Set ``numerics`` (see :data:`NUMERICS`) on every module of ``model`` that has the
    attribute (the norms and the rotating attention of a generated model; a reduced model's
    standard shell too) and return ``model``."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {', '.join(NUMERICS)}, not {numerics!r}")
    shell = getattr(model, "_shell", None)  # a reduced model's standard model (no submodule)
    for module in (*model.modules(), *(shell.modules() if shell is not None else ())):
        if hasattr(module, "numerics"):
            module.numerics = numerics
    return model


def rms_norm(
    x: Tensor, gain: Tensor, eps: float, *, one_plus: bool = False, numerics: Numerics = "symcomp"
) -> Tensor:
    """RMSNorm: x / sqrt(mean(x^2) + eps), times ``gain`` (``1 + gain`` with ``one_plus``), in
    ``numerics`` (:data:`NUMERICS`)."""
    if numerics == "symcomp":
        return F.rms_norm(x, x.shape[-1:], 1.0 + gain if one_plus else gain, eps)
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if one_plus:  # Gemma's RMSNorm: the gain in float32 too
        return (h * (1.0 + gain.float())).to(x.dtype)
    return gain * h.to(x.dtype)  # Llama's RMSNorm


def rope(
    x: Tensor,
    rotary_width: int,
    *,
    base: float,
    pairs: Literal["split_half", "adjacent"] = "split_half",
    position_divisor: float = 1.0,
    numerics: Numerics = "symcomp",
    positions: Tensor | None = None,
) -> Tensor:
    """RoPE on x (B, heads, T, head_width): rotate its first r = rotary_width dims, pass the rest.

    ``positions`` (B or 1, T): the tokens' position ids (a forward's ``Context.positions``); by
    default 0 .. T - 1. Position p turns each pair of dims by p / position_divisor *
    base^(-2i / r) (angles rounded as ``numerics`` says, :data:`NUMERICS`): the pairs
    (i, i + r/2) with ``pairs="split_half"`` (transformers' Llama, GPT-NeoX), the pairs
    (2i, 2i + 1) with ``pairs="adjacent"`` (the original RoPE).
    """
    if pairs not in ("split_half", "adjacent"):
        raise ValueError(f"pairs must be 'split_half' or 'adjacent', not {pairs!r}")
    T, r = x.shape[-2], rotary_width
    # angles in float64 for a float64 model, else (and always in transformers' numerics) float32
    wide = x.dtype == torch.float64 and numerics == "symcomp"
    dtype = torch.float64 if wide else torch.float32
    freqs = 1.0 / base ** (torch.arange(0, r, 2, dtype=dtype, device=x.device) / r)
    if positions is None:
        p = torch.arange(T, dtype=dtype, device=x.device)
    else:  # (B or 1, 1, T): broadcast over the heads
        p = positions.to(device=x.device, dtype=dtype)[:, None, :]
    if numerics == "symcomp":
        p = p / position_divisor
    else:  # transformers' linear scaling divides the frequencies
        freqs = freqs / position_divisor
    angles = p[..., None] * freqs  # (T, r/2) or (B or 1, 1, T, r/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    rot, rest = x[..., :r], x[..., r:]
    if pairs == "split_half":
        x1, x2 = rot[..., : r // 2], rot[..., r // 2 :]
        rot = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rot = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1)


def route(x: Tensor, W_router: Tensor, *, top_k: int, normalize: bool) -> Tensor:
    """A mixture of experts' routing weights (B, T, experts): softmax(x W_router) over the
    experts, its top_k largest kept (divided by their sum when ``normalize``), the others 0, as
    transformers' Mixtral router computes them (there in float32)."""
    probs = torch.softmax(x @ W_router, dim=-1)
    top, index = torch.topk(probs, top_k, dim=-1)
    if normalize:
        top = top / top.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter(-1, index, top)


def sinusoids(
    positions: int | Tensor, width: int, *, base: float, offset: int, like: Tensor
) -> Tensor:
    """The sinusoids of ``positions``, in ``like``'s dtype and device: (T, width) for the
    positions 0 .. T - 1 (an int T), (..., width) for a tensor of position ids.

    Position p is row n = p + offset: sin(n w_i) for i < width // 2, then cos(n w_i), w_i =
    base^(-i / (width // 2 - 1)) (tensor2tensor's layout), and a zero last dim for an odd width.
    Computed in float64.
    """
    half = width // 2
    i = torch.arange(half, dtype=torch.float64, device=like.device)
    step = math.log(base) / (half - 1) if half > 1 else 0.0  # one frequency (1) below width 4
    freqs = torch.exp(i * -step)
    if isinstance(positions, int):
        positions = torch.arange(positions, device=like.device)
    n = positions.to(device=like.device, dtype=torch.float64) + offset
    angles = n[..., None] * freqs
    pad = angles.new_zeros(*angles.shape[:-1], width - 2 * half)
    table = torch.cat((angles.sin(), angles.cos(), pad), -1)
    return table.to(like.dtype)


def padded_position_rows(input_ids: Tensor, *, padding: int, offset: int) -> Tensor:
    """(B, T) rows of the position table when positions count the tokens other than
    ``padding`` only (RoBERTa): offset - 1 + their count up to t, and offset - 1 for padding."""
    real = (input_ids != padding).long()
    return (offset - 1) + torch.cumsum(real, dim=1) * real


def without_rope(blocks: list[nn.Module], nope: tuple[int, ...]) -> nn.ModuleList:
    """The ``blocks`` with rotation switched off (``attn.rotary = False``) on the NoPE layers
    ``nope`` that exist (an instance may have fewer layers than the spec)."""
    for i in nope:
        if i < len(blocks):
            blocks[i].attn.rotary = False
    return nn.ModuleList(blocks)


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's per-head slopes, as transformers' BLOOM computes them.

    For n a power of two, slope_h = 2^(-8 (h + 1) / n); otherwise the slopes of the closest lower
    power of two c, then every other slope of 2c.
    """
    closest = 2 ** math.floor(math.log2(heads))
    slopes = [2.0 ** (-8.0 * i / closest) for i in range(1, closest + 1)]
    if closest != heads:
        extra = min(closest, heads - closest)
        slopes += [2.0 ** (-4.0 * i / closest) for i in range(1, 2 * extra, 2)]
    return slopes


def windowed(layers: nn.ModuleList, *, window: int, sliding: tuple[int, ...]) -> nn.ModuleList:
    """``layers`` with a sliding attention window on the listed layers (``attn.window``; the
    others keep None: full attention), as a per-layer ``layer_types`` list says (Gemma2)."""
    for i in sliding:
        if i < len(layers):
            layers[i].attn.window = window
    return layers
