"""Padded batches, a key/value cache and greedy decoding for the generated models.

A generated ``Model.forward(input_ids, attention_mask=None, *, cache=None)`` builds one
:class:`Context` per call and hands it to every attention layer. The context says where the
tokens sit (their position ids), which keys each query may read (causal order, a sliding window,
padding) and holds the :class:`Cache` that keeps the keys and values of the tokens seen before.
:func:`greedy` decodes with it, as transformers' ``generate(do_sample=False)`` does.

Conventions (transformers'): ``attention_mask`` (B, S) is 1 for a token and 0 for padding, over
the cached tokens and the new ones (S = cached + T). Position ids count the tokens that are not
padding (``cumsum(mask) - 1``, 0 on padding), so a left-padded prompt gets the positions it has
alone. Causal order and windows are in the sequence's own indices. A padding query, which may
read no key at all, reads itself: its output is meaningless but finite, and no other query reads
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["Cache", "Context", "greedy"]


@dataclass
class Cache:
    """The keys and values (B, kv_heads, S, head_width) each attention layer has seen, by
    layer module, and how many tokens that is (``length``). ``greedy`` makes one per call; a
    forward with ``cache=`` appends the new tokens to it."""

    length: int = 0
    keys_values: dict[nn.Module, tuple[Tensor, Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """One forward's positions, key mask and cache (see the module docstring)."""

    positions: Tensor  # (B or 1, T) position ids of the queries
    key_positions: Tensor  # (B or 1, S) position ids of every key: the cached ones, then these
    keep: Tensor | None  # (B, S) bool: False on padding; None: no attention_mask given
    past: int  # the cached tokens before these
    cache: Cache | None

    @classmethod
    def of(
        cls,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: Cache | None = None,
        *,
        limit: int | None = None,
    ) -> Context:
        """The context of ``input_ids`` (B, T): ValueError where the mask's shape is not
        (B, cached + T) or where cached + T exceeds ``limit`` (the model's positions)."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        S = past + T
        if limit is not None and limit < S:
            raise ValueError(f"{S} tokens: longer than the {limit} positions")
        device = input_ids.device
        if attention_mask is not None and tuple(attention_mask.shape) != (B, S):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({B}, {S}): "
                f"one entry per token, the {past} cached ones included"
            )
        if cache is not None:  # every layer of this call appends its T keys (remember)
            cache.length = S
        if attention_mask is None:
            keys = torch.arange(S, device=device)[None, :]
            return cls(keys[:, past:], keys, None, past, cache)
        keep = attention_mask.to(device=device) != 0
        keys = (torch.cumsum(keep.long(), dim=1) - 1).masked_fill(~keep, 0)
        # kept even where nothing is padding: no data-dependent branch for torch.compile
        return cls(keys[:, past:], keys, keep, past, cache)

    def remember(self, layer: nn.Module, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The keys and values (B, kv_heads, S, head_width) that ``layer``'s queries read: the
        cached ones before ``k`` and ``v`` (this call's), which the cache then keeps."""
        if self.cache is None:
            return k, v
        if self.past:
            k_past, v_past = self.cache.keys_values[layer]
            k, v = torch.cat((k_past, k), dim=-2), torch.cat((v_past, v), dim=-2)
        self.cache.keys_values[layer] = (k, v)
        return k, v

    def allowed(self, *, causal: bool, window: int | None = None) -> Tensor:
        """Which keys each query reads: (B or 1, 1, T, S) bool, True where it reads."""
        T, S = self.positions.shape[-1], self.key_positions.shape[-1]
        device = self.positions.device
        i = torch.arange(self.past, self.past + T, device=device)[:, None]  # query index
        j = torch.arange(S, device=device)[None, :]  # key index
        allowed = torch.ones(T, S, dtype=torch.bool, device=device)
        if causal:
            allowed &= j <= i
        if window is not None:
            allowed &= j > i - window
        allowed = allowed[None, None]
        if self.keep is not None:  # no padding key; a query that reads none reads itself
            allowed = allowed & self.keep[:, None, None, :]
            allowed = allowed | ((j == i) & ~allowed.any(-1, keepdim=True))
        return allowed

    def mask(self, *, causal: bool, window: int | None = None) -> Tensor | None:
        """``allowed`` for scaled_dot_product_attention, or None where its ``is_causal`` (or
        no mask, for a bidirectional layer) says the same: no window, no padding, no cache."""
        if window is None and self.keep is None and self.past == 0:
            return None
        return self.allowed(causal=causal, window=window)

    def alibi(self, slopes: Tensor, *, causal: bool, window: int | None = None) -> Tensor:
        """ALiBi's additive bias (B or 1, heads, T, S): slope_h (p_key - p_query) on the keys a
        query reads, -inf on the others."""
        distance = self.key_positions[:, None, :] - self.positions[:, :, None]  # (B, T, S)
        bias = slopes[None, :, None, None] * distance[:, None].to(slopes.dtype)
        return bias.masked_fill(~self.allowed(causal=causal, window=window), float("-inf"))


@torch.no_grad()
def greedy(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    *,
    attention_mask: Tensor | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> Tensor:
    """Greedy decoding, as transformers' ``generate(do_sample=False)``: (B, T + n) token ids,
    the prompt then at most ``max_new_tokens`` tokens, each the argmax of the last logits.

    ``model(input_ids, attention_mask, cache=cache)`` gives the logits; the first call reads the
    prompt, every later one the token chosen last, its keys and values cached. A sequence that
    has produced ``eos_token_id`` continues with ``pad_token_id`` (by default the eos token), and
    decoding stops when every sequence has.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, not {max_new_tokens}")
    B = input_ids.shape[0]
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    cache, out, step = Cache(), input_ids, input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = model(step, mask, cache=cache)
        token = logits[:, -1].argmax(dim=-1)
        if eos_token_id is not None:
            token = token.masked_fill(finished, pad)
            finished |= token == eos_token_id
        out = torch.cat((out, token[:, None]), dim=1)
        mask = torch.cat((mask, mask.new_ones(B, 1)), dim=1)
        step = token[:, None]
        if bool(finished.all()):
            break
    return out
