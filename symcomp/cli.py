"""The ``symcomp`` command line. Each command is a thin shell over the library API.

The exit codes (the contract scripts may rely on), and what reaches stderr:

- 0: done. Also when the reader of the output goes away (``symcomp schema | head``): the rest of
  the output is dropped quietly.
- 1: a claim was checked and is false: ``verify`` found a claimed symmetry that does not hold,
  or ``analyze``/``verify`` measured a Jacobian nullity that contradicts the count (the report
  says which group, by how much, and which parameters the unexplained directions move).
- 2: a :class:`symcomp.errors.SymcompError` (bad input, a refused overwrite, a checkpoint that
  cannot be reduced, ...), raised anywhere below: :func:`main` prints ``error: `` and its message
  (file:line:column, key path, what was found, what is accepted or what to do) on one line per
  problem, never a traceback; the status is the error's ``exit_code``. argparse reports bad
  command-line usage the same way (exit 2).
- 3: any other exception, which is a bug in symcomp: one line ``internal error: `` with the
  exception and where to report it; ``--debug`` (or ``SYMCOMP_DEBUG=1``) shows the traceback
  instead.

This is the only place that catches :class:`Exception`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from symcomp.errors import SymcompError


def _console(*, stderr: bool = False):  # rich is imported lazily, only for human output
    import shutil

    from rich.console import Console

    width = max(140, shutil.get_terminal_size().columns)
    return Console(highlight=False, width=width, stderr=stderr)


def cmd_check(args: argparse.Namespace) -> None:
    """Validate a spec and print a one-screen summary."""
    from rich.table import Table

    from symcomp.spec import load_spec
    from symcomp.spec.summary import summarize

    summary = summarize(load_spec(args.spec))
    if args.json:
        print(json.dumps(asdict(summary), indent=2))
        return
    table = Table(title=f"{summary.name}: valid spec", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in summary.rows:
        table.add_row(key, value)
    table.add_row("parameters", f"{summary.parameters:,}")
    table.add_row("symmetries", "\n".join(summary.symmetries))
    _console().print(table)


def cmd_schema(args: argparse.Namespace) -> None:
    """Print the JSON Schema of the spec language (every field described)."""
    from symcomp.spec.model import Spec

    print(json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True))


def cmd_import_hf(args: argparse.Namespace) -> None:
    """Turn a transformers config.json into a symcomp spec (transformers is not needed)."""
    from symcomp.hf.config_import import import_hf_config
    from symcomp.spec.writer import dump_spec, write_atomic

    spec = import_hf_config(args.config, name=args.name)
    text = dump_spec(spec, header=f"Imported by symcomp import-hf from {args.config}.")
    if args.output is None:
        sys.stdout.write(text)
        return
    write_atomic(args.output, text)
    _console().print(f"wrote {args.output} ({spec.name})")


def _spec_or_hf(args: argparse.Namespace):
    if (args.spec is None) == (args.hf is None):
        from symcomp.errors import SpecError

        raise SpecError.at("give a spec or --hf CONFIG, not both or neither", file="<command line>")
    if args.hf is not None:
        from symcomp.hf.config_import import import_hf_config

        return import_hf_config(args.hf)
    from symcomp.spec import load_spec

    return load_spec(args.spec)


def cmd_analyze(args: argparse.Namespace) -> None:
    """Count the redundant parameters: a closed form in the sizes, group by group, checked
    against the Jacobian nullity of a tiny instance (exit 1 when the measurement disagrees)."""
    from rich.table import Table

    from symcomp.pipeline import analyze
    from symcomp.report import analysis_json, folded, folded_line, percent, share

    if args.report is not None:
        _check_report_target(args.report)
    analysis = analyze(_spec_or_hf(args), discover=args.discover)
    if args.json:
        print(json.dumps(analysis_json(analysis), indent=2))
    else:
        kept, zero = folded(analysis)
        table = Table(title=f"{analysis.name}: redundant parameters", title_justify="left")
        width = max((len(line.name) for line in kept), default=5)
        table.add_column("group", min_width=width, overflow="fold")
        for column in ("id", "acts on", "per", "dim each", "units"):
            table.add_column(column, overflow="fold")
        table.add_column("dimension", justify="right", no_wrap=True)
        table.add_column("share", justify="right", no_wrap=True)
        for line in kept:
            table.add_row(
                line.name,
                line.catalogue_id,
                line.acts_on,
                line.per,
                line.dimension_each,
                line.units,
                f"{line.dimension:,}",
                percent(share(line.dimension, analysis.parameters)),
            )
        console = _console()
        console.print(table)
        if zero:
            console.print(folded_line(zero), markup=False, soft_wrap=True)
        total = percent(share(analysis.redundant, analysis.parameters))
        console.print(f"parameters          {analysis.parameters:,}")
        console.print(
            f"redundant           {analysis.redundant:,} ({total}) = {analysis.formula}",
            markup=False,
            soft_wrap=True,
        )
        console.print(f"reduced parameters  {analysis.reduced_parameters:,}")
        _print_witnesses(console, analysis.measured, discover=args.discover)
    if args.report is not None:
        from symcomp.report import write_report

        written = write_report(analysis, args.report)
        names = ", ".join(str(p) for p in written)
        print(f"wrote {names}", file=sys.stderr if args.json else sys.stdout)
    if not analysis.confirmed:
        raise SystemExit(1)


def _check_report_target(path: Path) -> None:
    """Refuse a report before the work: an unknown type, or matplotlib missing."""
    from symcomp.report import require_matplotlib

    if path.suffix.lower() not in (".md", ".html", ".htm"):
        raise SymcompError(
            f"--report {path}: unknown report type {path.suffix or '(none)'!r}; "
            "accepted: a file name ending in .md or .html"
        )
    require_matplotlib()


def _print_witnesses(console, witnesses, *, discover: bool) -> None:
    from symcomp.verify.witness import uncovered_lines

    for w in witnesses:
        for line in w.lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if discover and w.ok:  # a failure lists them already
            found = [f"  {w.outside} null directions lie outside the named groups"]
            found += uncovered_lines(w.uncovered)
            for line in found:
                console.print(line, markup=False, highlight=False, soft_wrap=True)


def cmd_verify(args: argparse.Namespace) -> None:
    """Check every group symbolically and numerically on a tiny instance of the spec, and the
    count against the Jacobian nullity of two tiny instances that differ in every size (exit 1
    when a group does not hold or the measurement contradicts the count)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from symcomp.pipeline import load, verify
    from symcomp.report import verify_json

    spec = load(args.spec)
    out = _console(stderr=args.json)  # with --json, stdout holds the JSON alone
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"verify {spec.name}", total=None)
        steps = [0]

        def progress(what: str) -> None:
            steps[0] += 1
            bar.update(task, description=f"verify {spec.name}, step {steps[0]}: {what}")

        report = verify(spec, symbolic=not args.no_symbolic, progress=progress)
    sizes = ", ".join(f"{k}={v}" for k, v in report.instance)
    out.print(
        f"{report.name}: the groups checked on a tiny instance of the same structure: {sizes}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for check in report.checks:
        mark = "ok " if check.holds else "REJECTED"
        settled = f" (settled at {', '.join(check.settled[:3])})" if check.settled else ""
        out.print(
            f"{mark} {check.name}: symbolic {check.symbolic}{settled}; "
            f"max |d log p| = {check.numeric_error:.2e} (tolerance 1e-10)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    _print_witnesses(out, report.witnesses, discover=True)
    verdict = "verified" if report.ok else "NOT VERIFIED"
    out.print(f"{report.name}: {verdict}", markup=False, highlight=False)
    if args.json:
        print(json.dumps(verify_json(report), indent=2))
    if not report.ok:
        raise SystemExit(1)


def cmd_compile(args: argparse.Namespace) -> None:
    """Generate a standalone PyTorch package (model, reduced model, groups, tests) from a spec."""
    from symcomp.codegen.emit import check_target, write_package
    from symcomp.errors import NoReducedModelError
    from symcomp.pipeline import compile_package, load

    spec = load(args.spec)
    if not args.force:
        check_target(args.output)  # before the work, and again when writing
    text = Path(args.spec).read_text()
    package = compile_package(spec, text, vendor_runtime=args.vendor_runtime)
    if package.chart_problem:
        raise NoReducedModelError(
            f"{args.spec}: no reduced model: {package.chart_problem}; nothing written"
        )
    write_package(package, args.output, force=args.force)
    console = _console()
    console.print(f"wrote {args.output}/ ({len(package.files)} files) from {args.spec}")


def cmd_reduce(args: argparse.Namespace) -> None:
    """Reduce a Hugging Face checkpoint: compile its package and write its standard and reduced
    weights there (OUT/standard.safetensors, OUT/reduced.safetensors)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from symcomp.hf.reduce import DTYPES, reduce_checkpoint
    from symcomp.report import folded, folded_line

    console = _console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, object] = {}
        names = {
            "read": "reading tensors",
            "analyze": "count, measured",
            "standard": "standard weights",
            "chart": "gauge fixing (units)",
            "reduced": "reduced weights",
        }

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(names.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        dtype = DTYPES[args.dtype] if args.dtype else None
        done = reduce_checkpoint(
            args.hf, args.output, force=args.force, progress=progress, dtype=dtype
        )
    analysis = done.analysis
    table = Table(title=f"{analysis.name}: parameters before and after", title_justify="left")
    for column, justify in (
        ("group", "left"),
        ("id", "left"),
        ("per", "left"),
        ("removed", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    kept, zero = folded(analysis)
    for line in kept:
        table.add_row(line.name, line.catalogue_id, line.per, f"{line.dimension:,}")
    table.add_section()
    table.add_row("parameters (standard)", "", "", f"{done.stored_parameters:,}")
    table.add_row("redundant", "", "", f"{analysis.redundant:,}")
    table.add_row("parameters (reduced)", "", "", f"{done.reduced_parameters:,}")
    console.print(table)
    if zero:
        console.print(folded_line(zero))
    console.print(
        f"wrote {done.out}/: the package, standard.safetensors and reduced.safetensors "
        f"(load with Model.from_pretrained / ReducedModel.from_pretrained)"
    )


def cmd_export(args: argparse.Namespace) -> None:
    """Write a reduced package's model back as a Hugging Face checkpoint (config.json,
    model.safetensors or shards) that transformers loads with its own classes and names."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from symcomp.hf.export import export_checkpoint

    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("writing tensors", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        done = export_checkpoint(
            args.package,
            args.hf,
            weights=args.weights,
            config=args.config,
            dtype=args.dtype,
            canonicalize=args.canonicalize,
            max_shard_size=args.max_shard_size,
            force=args.force,
            progress=progress,
        )
    console.print(
        f"wrote {done.out}/: config.json and {', '.join(done.files)} ({done.tensors} tensors, "
        f"{done.parameters:,} parameters, {done.dtype}, from the {done.source} weights; load "
        "with transformers' AutoModelForCausalLM.from_pretrained)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symcomp",
        description="Compile the parameter symmetries of a transformer spec into verified "
        "PyTorch code.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=_version(),
        help="print the versions of symcomp and of its runtime, and exit",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an internal error (exit 3), show the Python traceback (also: SYMCOMP_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip()
        sub = commands.add_parser(name, help=doc, description=doc)
        sub.set_defaults(func=func)
        return sub

    check = add("check", cmd_check)
    check.add_argument("spec", type=Path, help="a YAML spec (see `symcomp schema`)")
    check.add_argument("--json", action="store_true", help="print one JSON object")

    add("schema", cmd_schema)

    analyze = add("analyze", cmd_analyze)
    analyze.add_argument("spec", type=Path, nargs="?", help="a YAML spec")
    analyze.add_argument("--hf", type=Path, help="a Hugging Face config.json (or its folder)")
    analyze.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (its keys: docs/cli.md)",
    )
    analyze.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="also write the breakdown with plots (per group, per layer) to FILE.md (the SVGs "
        "beside it) or FILE.html (one file); needs matplotlib: pip install 'symcomp[report]'",
    )
    analyze.add_argument(
        "--discover",
        action="store_true",
        help="list the null directions the named groups do not cover (undeclared symmetries)",
    )

    ver = add("verify", cmd_verify)
    ver.add_argument("spec", type=Path, help="a YAML spec")
    ver.add_argument("--no-symbolic", action="store_true", help="skip the SymPy proofs")
    ver.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object to stdout (its keys: docs/cli.md); the text goes to stderr",
    )

    comp = add("compile", cmd_compile)
    comp.add_argument("spec", type=Path, help="a YAML spec")
    comp.add_argument("-o", "--output", type=Path, required=True, help="the package directory")
    comp.add_argument(
        "--force", action="store_true", help="replace a directory symcomp did not write"
    )
    comp.add_argument(
        "--vendor-runtime",
        action="store_true",
        help="copy symcomp_runtime into the package, so that it needs only torch",
    )

    red = add("reduce", cmd_reduce)
    red.add_argument(
        "--hf",
        type=Path,
        required=True,
        help="a checkpoint folder (config.json, model.safetensors)",
    )
    red.add_argument("-o", "--output", type=Path, required=True, help="the package directory")
    red.add_argument(
        "--force", action="store_true", help="replace a directory symcomp did not write"
    )
    red.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16", "float16"),
        help="the type of the weights written (default: the checkpoint's); the chart is "
        "computed in float64 whatever it is",
    )

    exp = add("export", cmd_export)
    exp.add_argument("package", type=Path, help="a package written by `symcomp reduce --hf`")
    exp.add_argument(
        "--hf",
        type=Path,
        required=True,
        metavar="OUT",
        help="the checkpoint folder to write (config.json, model.safetensors or shards)",
    )
    exp.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="the symcomp weights to export (default: the package's reduced.safetensors; a "
        "standard.safetensors is exported as it is)",
    )
    exp.add_argument(
        "--canonicalize",
        action="store_true",
        help="bring standard weights to the reduced model's chart first",
    )
    exp.add_argument(
        "--config",
        type=Path,
        metavar="CONFIG",
        help="the original config.json (default: the package's copy, hf_config.json)",
    )
    exp.add_argument(
        "--dtype",
        choices=["float64", "float32", "bfloat16", "float16"],
        help="the type of the tensors written (default: the weights' own)",
    )
    exp.add_argument(
        "--max-shard-size",
        default="5GB",
        metavar="SIZE",
        help="shard the weights past this size, as save_pretrained does (default: 5GB)",
    )
    exp.add_argument("--force", action="store_true", help="replace a folder that holds files")

    imp = add("import-hf", cmd_import_hf)
    imp.add_argument(
        "config",
        type=Path,
        help="a Hugging Face config.json, its folder, or a Hub id (its config in the local cache)",
    )
    imp.add_argument("-o", "--output", type=Path, help="write the spec here (default: stdout)")
    imp.add_argument("--name", help="spec name (default: from the path)")
    return parser


def _version() -> str:
    """``symcomp X (runtime Y)``: the package and the runtime it imports."""
    from symcomp import __version__

    try:
        import symcomp_runtime

        runtime = symcomp_runtime.__version__
    except ImportError:
        runtime = "not installed"
    return f"symcomp {__version__} (symcomp-runtime {runtime})"


REPORT_TO = "the symcomp issue tracker"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``symcomp`` script: user errors exit 2 and bugs exit 3, each with a
    message and without a traceback (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except BrokenPipeError:
        _drop_stdout()
        sys.exit(0)
    except SymcompError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the top level: anything else is a bug in symcomp
        if args.debug or os.environ.get("SYMCOMP_DEBUG"):
            raise
        message = " ".join(str(exc).split())  # one line
        print(
            f"internal error: {type(exc).__name__}: {message} (a bug in symcomp: please report "
            f"it with the command and its input to {REPORT_TO}; --debug shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(3)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is still
    buffered cannot raise a second BrokenPipeError (Python's documented idiom)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    main()
