"""The jinja2 environment every generated file is rendered with.

Templates hold layout only: what to emit is computed by the passes in this package and handed to
the templates as plain frozen data. Rendering is deterministic: no dates, no dict-order
surprises (callers pass tuples), and ``StrictUndefined`` makes a missing variable an error
rather than an empty string.
"""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("symcomp.codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **context: object) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
