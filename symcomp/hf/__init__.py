"""Hugging Face interop: import configs as specs, read checkpoints, reduce them, export them.

Reading configs and safetensors needs no transformers; :func:`from_transformers` takes a live
transformers model (``pip install 'symcomp[hf]'``). The reducing half imports torch, so it is
loaded on first use.
"""

from typing import Any

from symcomp.hf.config_import import import_hf_config

__all__ = ["export_checkpoint", "from_transformers", "import_hf_config", "reduce_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("from_transformers", "reduce_checkpoint"):
        from symcomp.hf import reduce

        return getattr(reduce, name)
    if name == "export_checkpoint":
        from symcomp.hf import export

        return export.export_checkpoint
    raise AttributeError(f"module 'symcomp.hf' has no attribute {name!r}")
