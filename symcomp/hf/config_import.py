"""Import a Hugging Face ``config.json`` as a symcomp spec, reading the JSON directly.

transformers is never imported: the file is parsed by :func:`symcomp.spec.source.read_json`, which
keeps every key's line and column, so an error points into the config. Each supported
``model_type`` has one small builder (:mod:`.config_families`, with the pieces several share in
:mod:`.config_pieces`) that maps the config's keys onto the spec's architecture, using the
defaults that the transformers 5 configuration and modeling code apply when a key is absent
(checked against ``transformers/models/<family>/{configuration,modeling}_<family>.py``).

Nothing is approximated: a key whose value would change the function in a way a spec cannot
express is an error naming it, and so is any key that is neither read by the family's builder
nor known to leave the function unchanged (token ids, dropout, dtype, cache, generation
settings, ...; :mod:`.config_reader` tracks the keys read). The core sizes (vocabulary, width,
layers, heads, MLP width, positions) are required even where transformers would fall back to a
class default: a config without them does not describe a particular model.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from symcomp.errors import ImportHFError, KeyPath, Location, Problem, SpecError, format_key_path
from symcomp.hf.config_families import FAMILIES
from symcomp.hf.config_reader import _Config, _short
from symcomp.spec.checks import MAX_BLOCKS
from symcomp.spec.loader import spec_from_source
from symcomp.spec.model import Spec
from symcomp.spec.source import Source, read_json

CONFIG_FILE = "config.json"


def import_hf_config(path: str | Path, name: str | None = None) -> Spec:
    """Read a Hugging Face ``config.json`` (or a directory holding one, or a Hub id such as
    ``gpt2`` or ``meta-llama/Llama-2-7b-hf`` whose config is in the local Hugging Face cache:
    nothing is downloaded) and return its spec.

    ``name`` is the spec's name; by default the config's directory name (or the file's stem when
    the file is not called ``config.json``, or the Hub id's last part), made to fit the spec's
    name pattern. Raises
    :class:`ImportHFError` (a :class:`SpecError`) for unreadable or malformed input and for
    anything not supported.
    """
    try:
        return _import_hf_config(path, name)
    except SpecError as exc:
        raise ImportHFError(exc.problems) from None


def _import_hf_config(path: str | Path, name: str | None) -> Spec:
    file = _config_file(Path(path))
    hub_id = str(path) if file != Path(path) and not Path(path).exists() else None
    if name is None and hub_id is not None:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", hub_id.rsplit("/", 1)[-1])
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
    _check_depth(config)
    architecture = family.build(config)
    _check_common(config)
    config.reject_unknown(model_type, family.ignored)
    data = {
        "name": name if name is not None else default_name(file),
        "description": f"Imported from the Hugging Face config {hub_id or file} "
        f"(model_type {model_type}).",
        "hf_model_type": model_type,
        "architecture": architecture,
        "symmetries": "auto",
    }
    return _validate(data, source)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _config_file(path: Path) -> Path:
    if not path.exists() and _HUB_ID.match(str(path)):
        return _cached_hub_config(str(path))
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


def hub_cache() -> Path:
    """The local Hugging Face Hub cache, as huggingface_hub finds it (read at each call)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"


def _cached_hub_config(repo_id: str) -> Path:
    """The config.json of a Hub id from the local cache, offline (huggingface_hub reads the
    cache's layout); a clear error when it is not there."""
    how = (
        f"a {CONFIG_FILE} path, its folder, or a Hub id whose config is in the local cache "
        f"(fetch it with: hf download {repo_id} {CONFIG_FILE})"
    )
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        raise SpecError.at(
            "no such file, and reading a Hub id needs huggingface_hub (pip install 'symcomp[hf]')",
            file=repo_id,
            accepted=how,
        ) from None
    found = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=hub_cache())
    if not isinstance(found, str):
        raise SpecError.at(
            f"no such file, and no {CONFIG_FILE} for the Hub id {repo_id!r} in the local "
            f"Hugging Face cache ({hub_cache()})",
            file=repo_id,
            accepted=how,
        )
    return Path(found)


def default_name(file: Path) -> str:
    """The spec name for a config file: its directory's name for ``config.json``, else its stem."""
    stem = file.resolve().parent.name if file.name == CONFIG_FILE else file.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip("_.-")
    return name or "imported"


def _model_type(config: _Config) -> str:
    accepted = ", ".join(FAMILIES)
    value, path = config.first(("model_type",), None)
    if value is None:
        raise config.error("required key is missing", ("model_type",), accepted=accepted)
    if not isinstance(value, str) or value not in FAMILIES:
        close = difflib.get_close_matches(value, FAMILIES, n=1) if isinstance(value, str) else []
        message = "unsupported model_type" + (f" (did you mean {close[0]!r}?)" if close else "")
        raise config.error(message, path, found=_short(value), accepted=accepted)
    config.model_type = value
    return value


# transformers' names for the number of blocks, across families
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _check_depth(config: _Config) -> None:
    """A layer count the spec cannot hold is refused before a family's builder makes a list
    per layer (sliding or NoPE layers): 2^31 layers would be gigabytes of strings."""
    for key in _LAYER_KEYS:
        value = config.data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_BLOCKS:
            raise config.error(
                "too many layers: symcomp's graph holds every layer",
                (key,),
                found=str(value),
                accepted=f"at most {MAX_BLOCKS}",
            )


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
    ("mlp", "experts", "count"): (("num_local_experts",),),
    ("mlp", "experts", "top_k"): (("num_experts_per_tok",),),
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
