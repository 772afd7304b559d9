"""The parsed ``config.json`` of :mod:`.config_import` and the keys a family's builder has
read: typed getters whose errors point at the key's line and column, and the check that
every other set key is known to leave the function unchanged."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from symcomp.errors import KeyPath, SpecError
from symcomp.spec.model import MAX_SIZE
from symcomp.spec.source import Source

_NO_DEFAULT: Any = object()


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
                unread = [k for k in self.data if k not in self.read]
                close = difflib.get_close_matches(keys[0], unread, n=1)
                hint = f" (is {close[0]!r} a misspelling?)" if close else ""
                raise self.error(f"required key is missing{hint}", (keys[0],), accepted=accepted)
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
        if abs(value) > MAX_SIZE:
            raise self.error(
                "integer out of range", path, found=_short(value), accepted=f"at most {MAX_SIZE:,}"
            )
        return value

    def positive(self, *keys: str, default: Any = _NO_DEFAULT) -> int:
        """Like :meth:`integer`, for a count a size is divided by (heads)."""
        value = self.integer(*keys, default=default)
        if value < 1:
            _, path = self.first(keys, default)
            raise self.error(
                "expected a positive integer", path, found=str(value), accepted="1 or more"
            )
        return value

    def layer_types(self, default: Any) -> list[str]:
        """``layer_types`` (or ``default`` where absent or null): a list of attention types."""
        types = self.get("layer_types") or default
        if not isinstance(types, list) or not all(
            t in ("full_attention", "sliding_attention") for t in types
        ):
            raise self.error(
                "layer types not supported",
                ("layer_types",),
                found=_short(types),
                accepted="a list of 'full_attention' and 'sliding_attention'",
            )
        return types

    def optional_integer(self, key: str, default: int | None) -> int | None:
        """Like :meth:`integer`, but absent or null with no default gives None."""
        if not self.present(key) and default is None:
            return None
        return self.integer(key, default=default)

    def number(self, key: str, default: Any = _NO_DEFAULT) -> float:
        value, path = self.first((key,), default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("expected a number", path, found=_short(value))
        number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(number):
            raise self.error("expected a finite number", path, found=_short(value))
        return number

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
        # remote-code class names (transformers builds its own class unless trusted), and the
        # tokenizer's length limit
        "auto_map", "model_max_length",
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
