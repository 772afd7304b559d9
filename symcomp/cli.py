"""The ``symcomp`` command line. Each command is a thin shell over the library API.

Bad input raises :class:`symcomp.errors.SymcompError` anywhere below; :func:`main` prints its
message (file:line:column, key path, what was found, what is accepted) and exits with code 2,
never with a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from symcomp.errors import SymcompError

app = typer.Typer(
    name="symcomp",
    help="Compile the parameter symmetries of a transformer spec into verified PyTorch code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False)

SpecArg = Annotated[Path, typer.Argument(help="A YAML spec (see `symcomp schema`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")]


@app.command()
def check(spec: SpecArg, json_out: JsonOpt = False) -> None:
    """Validate a spec and print a one-screen summary."""
    from dataclasses import asdict

    from symcomp.spec import load_spec
    from symcomp.spec.summary import summarize

    summary = summarize(load_spec(spec))
    if json_out:
        print(json.dumps(asdict(summary), indent=2))
        return
    table = Table(title=f"{summary.name}: valid spec", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.rows:
        table.add_row(key, value)
    table.add_row("parameters", f"{summary.parameters:,}")
    table.add_row("symmetries", "\n".join(summary.symmetries))
    out.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (every field described)."""
    from symcomp.spec.model import Spec

    print(json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True))


@app.command("import-hf")
def import_hf(
    config: Annotated[Path, typer.Argument(help="A Hugging Face config.json, or its folder.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the spec here (default: stdout).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Spec name (default: from the path).")] = None,
) -> None:
    """Turn a transformers config.json into a symcomp spec (no transformers needed)."""
    from symcomp.hf.config_import import import_hf_config
    from symcomp.spec.writer import dump_spec, write_atomic

    spec = import_hf_config(config, name=name)
    text = dump_spec(spec, header=f"Imported by symcomp import-hf from {config.name}.")
    if output is None:
        sys.stdout.write(text)
        return
    write_atomic(output, text)
    out.print(f"wrote {output} ({spec.name})")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``symcomp`` script: user errors exit 2 without a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except SymcompError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
