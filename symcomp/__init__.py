"""symcomp: a symbolic-to-numeric compiler for the parameter symmetries of transformers.

The pipeline, one subpackage per stage: ``spec`` (``load_spec``), then the symbolic and codegen
stages. Heavy libraries (torch, transformers) are imported only by the stages that need them.
"""

from symcomp.errors import SpecError, SymcompError
from symcomp.hf.config_import import import_hf_config
from symcomp.spec import load_spec, parameter_count, parse_spec

__version__ = "0.4.0"

__all__ = [
    "SpecError",
    "SymcompError",
    "__version__",
    "import_hf_config",
    "load_spec",
    "parameter_count",
    "parse_spec",
]
