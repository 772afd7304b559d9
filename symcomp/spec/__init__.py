"""Stage 1: the spec language. ``load_spec(path) -> Spec``."""

from symcomp.spec.loader import load_spec, parse_spec, spec_from_data
from symcomp.spec.model import Architecture, CustomGroup, Spec
from symcomp.spec.params import Sizes, parameter_count, parameter_shapes, sizes_of

__all__ = [
    "Architecture",
    "CustomGroup",
    "Sizes",
    "Spec",
    "load_spec",
    "parameter_count",
    "parameter_shapes",
    "parse_spec",
    "sizes_of",
    "spec_from_data",
]
