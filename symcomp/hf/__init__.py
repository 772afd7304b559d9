"""Import Hugging Face configs as symcomp specs (reading the JSON, not via transformers)."""

from symcomp.hf.config_import import import_hf_config

__all__ = ["import_hf_config"]
