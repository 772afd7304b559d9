"""symcomp_runtime: what every package compiled by symcomp needs at run time.

It needs only torch. A generated package imports it and checks :data:`__version__` against the
version it was compiled for (:func:`require`); ``symcomp compile --vendor-runtime`` copies it into
a package that must stand alone, so every module here imports its siblings relatively.
"""

from __future__ import annotations

from .errors import RuntimeVersionError, SymcompError

__version__ = "0.4.0"

__all__ = ["RuntimeVersionError", "SymcompError", "__version__", "require"]


def _major_minor(version: str) -> tuple[int, int]:
    major, minor, *_ = (int(part) for part in [*version.split(".")[:2], "0"])
    return major, minor


def require(compiled_for: str, package: str) -> None:
    """Refuse to run a package compiled for another runtime series than this one.

    Versions agree when their major and minor numbers agree: a patch release only fixes bugs.
    """
    if _major_minor(compiled_for) != _major_minor(__version__):
        raise RuntimeVersionError(
            f"{package} was compiled for symcomp-runtime {compiled_for}, but {__version__} is "
            f"installed; install symcomp-runtime=={compiled_for} or recompile the spec"
        )
