"""Read a Hugging Face checkpoint folder without transformers: ``config.json`` and its weights.

The weights are ``model.safetensors``, or the shards a ``model.safetensors.index.json`` lists
(what ``save_pretrained`` writes). A missing, truncated or unreadable file is a
:class:`SpecError` naming it; so is a shard the index lists but the folder lacks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
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


class LazyTensors(Mapping[str, Tensor]):
    """The tensors of safetensors files, read one at a time when asked for: each file is
    opened memory-mapped (``safe_open``), so only the tensors in use are resident.
    ``progress(done, total)`` is called as tensors are read."""

    def __init__(self, files: tuple[Path, ...], progress=None) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        self._handles, self._where, self._progress, self._done = {}, {}, progress, 0
        for file in files:
            try:
                handle = safe_open(str(file), framework="pt")
                self._handles[file] = handle
                for key in handle.keys():  # noqa: SIM118 (a safe_open handle)
                    self._where[key] = file
            except (SafetensorError, OSError) as exc:
                raise _unreadable(file, exc) from None
        self.dtype = self._dtype()

    def _dtype(self):
        """The checkpoint's floating-point type (of its first floating tensor)."""
        for key, file in self._where.items():
            dtype = self._handles[file].get_slice(key).get_dtype()
            if dtype in _FLOATS:
                return _FLOATS[dtype]
        return None

    def __getitem__(self, key: str) -> Tensor:
        from safetensors import SafetensorError

        file = self._where[key]
        try:
            tensor = self._handles[file].get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise _unreadable(file, exc) from None
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, len(self._where))
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


_FLOATS = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _unreadable(file: Path, exc: Exception) -> SpecError:
    return SpecError.at(
        f"cannot read the weights ({exc}): the file is truncated or not safetensors",
        file=str(file),
    )


def read_checkpoint(
    folder: str | Path,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    lazy: bool = False,
) -> Checkpoint:
    """The spec (from ``config.json``) and the tensors of a checkpoint folder (with ``lazy``,
    a :class:`LazyTensors`: memory-mapped, read as asked for). ``progress(done, total)`` is
    called as tensors are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SpecError.at("not a folder", file=str(folder), accepted="a checkpoint folder")
    if not (folder / CONFIG_FILE).is_file():
        raise SpecError.at(f"no {CONFIG_FILE} in the folder", file=str(folder))
    spec = import_hf_config(folder, name=name)
    tensors = LazyTensors(weight_files(folder), progress)
    if lazy:
        return Checkpoint(spec, tensors)  # type: ignore[arg-type]
    return Checkpoint(spec, dict(tensors.items()))
