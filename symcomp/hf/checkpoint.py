"""Read a Hugging Face checkpoint folder without transformers: ``config.json`` and its weights.

The weights are ``model.safetensors``, or the shards a ``model.safetensors.index.json`` lists
(what ``save_pretrained`` writes). A missing, truncated or unreadable file is a
:class:`SpecError` naming it; so is a shard the index lists but the folder lacks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from symcomp.errors import SpecError
from symcomp.hf.config_import import CONFIG_FILE, import_hf_config
from symcomp.spec.model import Spec

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class Checkpoint:
    spec: Spec  # its hf_model_type names the family
    state_dict: dict[str, Tensor]


def weight_files(folder: Path) -> tuple[Path, ...]:
    """The safetensors files of a checkpoint folder, in the order to read them."""
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if single.is_file():
        return (single,)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SpecError.at(f"not a safetensors index ({exc})", file=str(index)) from None
        shards = tuple(folder / name for name in sorted(set(weight_map.values())))
        for shard in shards:
            if not shard.is_file():
                missing = f"the index lists {shard.name}, which is missing"
                raise SpecError.at(missing, file=str(index))
        return shards
    raise SpecError.at(
        f"no {WEIGHTS_FILE} (or {INDEX_FILE}) in the folder",
        file=str(folder),
        accepted="a folder as save_pretrained writes it: config.json and model.safetensors",
    )


def read_checkpoint(
    folder: str | Path,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Checkpoint:
    """The spec (from ``config.json``) and the tensors of a checkpoint folder.
    ``progress(done, total)`` is called as tensors are read."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    folder = Path(folder)
    if not folder.is_dir():
        raise SpecError.at("not a folder", file=str(folder), accepted="a checkpoint folder")
    if not (folder / CONFIG_FILE).is_file():
        raise SpecError.at(f"no {CONFIG_FILE} in the folder", file=str(folder))
    spec = import_hf_config(folder, name=name)
    files = weight_files(folder)
    state_dict: dict[str, Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                names = list(f.keys())
                for i, key in enumerate(names):
                    state_dict[key] = f.get_tensor(key)
                    if progress is not None:
                        progress(i + 1, len(names))
        except (SafetensorError, OSError) as exc:
            raise SpecError.at(
                f"cannot read the weights ({exc}): the file is truncated or not safetensors",
                file=str(file),
            ) from None
    return Checkpoint(spec, state_dict)
