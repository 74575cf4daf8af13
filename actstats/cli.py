"""The command line: parse, check option conflicts, call the engine, render with rich.

Every error a user can cause ends as one ``Error: ...`` line on stderr: usage errors exit 2,
failures exit 1, never a traceback (set ACTSTATS_DEBUG=1 to see one for an unexpected error).
Heavy modules (numpy, rich, matplotlib) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from . import __version__


class UserError(click.ClickException):
    """A ConfigError at the CLI edge: one line, exit status 2."""

    exit_code = 2


class Failure(click.ClickException):
    """A RunError at the CLI edge: one line, exit status 1."""

    exit_code = 1


class Group(click.Group):
    """Runs commands so that every way out is one line and a meaningful exit status."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        code = 0
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except click.Abort as exc:  # click turns Ctrl-C into Abort
            stop = exc.__cause__ if isinstance(exc.__cause__, KeyboardInterrupt) else None
            click.echo("Interrupted." if stop else "Aborted.", err=True)
            code = 128 + getattr(stop, "signum", 2) if stop else 1
        except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM during a sweep (sweep.Interrupted): 143
            click.echo("Interrupted.", err=True)
            code = 128 + getattr(exc, "signum", 2)
        except MemoryError:
            click.echo("Error: out of memory; lower --width, --layers, --batch or --chunk-size.", err=True)
            code = 1
        except Exception as exc:  # a bug: still one line, unless asked for the traceback
            if os.environ.get("ACTSTATS_DEBUG"):
                raise
            click.echo(f"Error: internal error ({type(exc).__name__}: {exc}); "
                       "run with ACTSTATS_DEBUG=1 for the traceback and please report it.", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def translate(fn):
    """Turn the library's ConfigError/RunError into UserError/Failure."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import ConfigError, RunError

        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except RunError as exc:
            raise Failure(str(exc)) from None

    return wrapper


def consoles(quiet: bool):
    """(results console, messages console); --quiet silences both."""
    from rich.console import Console

    return Console(quiet=quiet, highlight=False), Console(stderr=True, quiet=quiet, highlight=False)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="actstats")
def cli():
    """A lab for weight initialization: build a deep MLP, initialize it, push a batch through it,
    and see what happens to activations and gradients layer by layer."""


# --- shared options --------------------------------------------------------------------------------

def network_options(fn):
    """The options that describe one experiment (all default to the config file, then RunConfig)."""
    opts = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML file of run options; the options below override it."),
        click.option("--init", help="Weight init spec NAME[:key=value,...] (default xavier); "
                                    "see 'actstats inits'."),
        click.option("--bias-init", help="Bias init spec (default zeros), e.g. constant:value=0.01."),
        click.option("--act", help="Activation: tanh (default), sigmoid, relu, leaky_relu, elu, selu, "
                                   "gelu, linear."),
        click.option("--layers", type=int, help="Number of layers (default 10)."),
        click.option("--width", help="Units per layer (default 500), or one per layer: 1000,500,250."),
        click.option("--input-dim", type=int, help="Input units (default: the first layer's width)."),
        click.option("--batch", type=int, help="Samples (default 1000)."),
        click.option("--input", "input_", help="Input distribution: normal (default), uniform, half."),
        click.option("--dtype", help="float64 (default) or float32."),
        click.option("--seed", type=int, help="Random seed (default 0)."),
        click.option("--bins", type=int, help="Histogram bins (default 50)."),
        click.option("--chunk-size", type=int, help="Rows per chunk (default: automatic, bounded memory; a few rows per chunk is much slower)."),
        click.option("--forward-only", is_flag=True, default=None, help="Skip the backward pass."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def build_config(config_file, **options):
    from .config import RunConfig

    overrides = {k: v for k, v in options.items() if v is not None}
    if "input_" in overrides:
        overrides["input"] = overrides.pop("input_")
    if overrides.pop("forward_only", None):
        overrides["backward"] = False
    if config_file is not None:
        from .config import load_yaml
        from .errors import ConfigError
        from .sweep import is_sweep_mapping

        if is_sweep_mapping(load_yaml(config_file)):
            raise ConfigError(f"{config_file} is a sweep file (it has grid:, runs: or expect:); "
                              f"run it with 'actstats sweep {config_file}'.")
        return RunConfig.from_yaml(config_file, overrides)
    return RunConfig.from_dict(overrides)


def output_dir(out: Path, name: str | None, config, overwrite: bool) -> Path:
    """results/<name>; never silently replaces a complete result of a different run, and never
    anything that is not a result (a sweep's folder, the user's own files)."""
    from .errors import ConfigError
    from .experiment import config_hash, default_name
    from .results import holds_other_files, stored_config

    if name is not None and (name in ("", ".", "..") or Path(name).name != name):  # one component
        raise ConfigError(f"--name {name!r} must be a folder name (no '/', not '.' or '..').")
    path = out / (name or default_name(config))
    if holds_other_files(path):
        if name:
            raise ConfigError(f"{path} exists and holds no actstats result (no stats.json); "
                              "choose another --name.")
        return out / f"{default_name(config)}-{config_hash(config)}"
    stored = stored_config(path)
    if stored is None or stored.identity() == config.identity() or overwrite:
        return path
    if name:
        a, b = stored.identity(), config.identity()
        diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
        raise ConfigError(f"{path} holds a different run ({diff}); choose another --name "
                          "or pass --overwrite.")
    return out / f"{default_name(config)}-{config_hash(config)}"


# --- run ---------------------------------------------------------------------------------------------

@cli.command()
@network_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Folder that receives the results folder.")
@click.option("--name", help="Results folder name (default: derived from the config).")
@click.option("--overwrite", is_flag=True, help="Replace a result of a different run with the same --name.")
@click.option("--no-plots", is_flag=True, help="Do not draw the PNG figures.")
@click.option("--no-save", is_flag=True, help="Write no results folder; only print.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@translate
def run(config_file, out, name, overwrite, no_plots, no_save, as_json, quiet, **options):
    """Run one experiment and report activations and gradients layer by layer.

    \b
    Examples:
      actstats run --init normal:std=0.01 --act tanh     # collapses toward 0
      actstats run --init xavier --act relu --layers 10  # Xavier starves ReLU
      actstats run --init he --act relu                  # He keeps it
    """
    import time

    from .render import diagnosis_grid, layer_table

    t0 = time.perf_counter()
    config = build_config(config_file, **options)
    path = None if no_save else output_dir(out, name, config, overwrite)
    console, messages = consoles(quiet or as_json)
    result = run_with_progress(config, messages)
    if path is not None:
        with messages.status("writing results…"):
            result.save(path, plots=not no_plots)
    if as_json:
        from .results import to_json_text

        click.echo(to_json_text(result))
    console.print(layer_table(result))
    console.print(diagnosis_grid(result))
    if path is not None:
        files = "stats.json, stats.csv, config.yaml, histograms.npz" + \
            ("" if no_plots else ", histograms.png, profile.png")
        messages.print(f"[dim]Wrote {path}/ ({files}) in {time.perf_counter() - t0:.1f} s[/dim]")


def run_with_progress(config, messages):
    """Run, with a progress bar on stderr when there is more than one chunk to do."""
    from .experiment import run_experiment

    from . import network

    chunk = config.chunk_size or network.auto_chunk(config)
    if config.batch <= chunk or messages.quiet or not messages.is_terminal:
        return run_experiment(config)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("running"), BarColumn(), TextColumn("{task.completed}/{task.total} samples"),
                  TimeRemainingColumn(), console=messages, transient=True) as bar:
        task = bar.add_task("run", total=config.batch)
        return run_experiment(config, progress=lambda done, total: bar.update(task, completed=done))


# --- sweep, report ------------------------------------------------------------------------------------

@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--jobs", "-j", type=int, help="Worker processes (default: the number of cores).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Folder that receives the sweep's folder <name>/.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a run option in every run (repeatable), e.g. --set batch=200.")
@click.option("--fresh", is_flag=True, help="Recompute runs that already have complete results.")
@click.option("--no-check", is_flag=True, help="Do not check the claims (expect:).")
@click.option("--no-plots", is_flag=True, help="Draw no PNG figures (per run or comparison).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.option("--cluster", metavar="ADDRESS", help="Run on Dask: tcp://HOST:PORT (a running scheduler) "
              "or local:N (N local worker processes); needs pip install 'actstats[cluster]'.")
@translate
def sweep(file, jobs, out, overrides, fresh, no_check, no_plots, quiet, cluster):
    """Run every run of a sweep FILE (YAML: base, grid/runs, seeds, expect) in parallel, resumably,
    then write summary.csv, comparison figures and report.md and check the claims.

    \b
    Examples:
      actstats sweep configs/tanh-scale.yaml              # C3-C5, checks its claims
      actstats sweep configs/all-claims.yaml --jobs 2     # every claim of the source documents
      actstats sweep configs/kaiming-modes.yaml --set batch=200 --out /tmp/r
      actstats sweep configs/all-claims.yaml --cluster tcp://10.0.0.5:8786
    """
    import time

    from . import report as reporting
    from .sweep import SweepConfig, check_replacements, parse_overrides, sweep_lock

    t0 = time.perf_counter()
    spec = SweepConfig.from_yaml(file, parse_overrides(overrides))
    if cluster is not None and jobs is not None:
        raise UserError("--jobs and --cluster conflict: on a cluster the workers are the cluster's.")
    console, messages = consoles(quiet)
    executor = None
    if cluster is None:
        from .sweep import is_done, plan_jobs

        todo = [r for r in spec.runs if fresh or not is_done(out / spec.name / r.name, r.config)]
        workers, note = plan_jobs(todo, jobs)  # noted here, before the bar; run_sweep caps again
        if note:
            messages.print(f"[dim]{note}[/dim]")
    else:
        from .cluster import DaskExecutor, core_warning

        warning = core_warning(cluster)  # a malformed address is a usage error even where Dask is missing
        if warning:
            messages.print(f"[yellow]warning:[/yellow] {warning}")
        with messages.status(f"connecting to the Dask cluster {cluster}…"):
            executor = DaskExecutor(cluster)
    try:
        with executor or contextlib.nullcontext(), sweep_lock(out / spec.name):
            # the lock is held through the report too; see sweep.sweep_lock
            if executor is not None:
                workers = executor.slots
            if not fresh:  # before the progress bar: a refusal is one line
                check_replacements(spec, out / spec.name)
            state = run_with_bar(spec, out, workers, fresh, not no_plots, messages, executor)
            with messages.status("writing summary, figures and report…"):
                claims = reporting.build(spec, state, plots=not no_plots, check=not no_check)
    except KeyboardInterrupt as exc:  # exit 130 (Ctrl-C) or 143 (SIGTERM)
        click.echo(f"Interrupted: finished runs are kept in {out / spec.name}/; run the same command "
                   "again to resume.", err=True)
        raise click.exceptions.Exit(128 + getattr(exc, "signum", 2)) from None
    console.print(reporting.runs_table(spec, state))
    if claims:
        console.print(reporting.claims_table(claims))
    for warning in state.warnings:
        messages.print(f"[yellow]warning:[/yellow] {warning}")
    computed = sum(1 for s in state.status.values() if s == "done")
    kept = sum(1 for s in state.status.values() if s == "skipped")
    messages.print(f"[dim]Wrote {state.folder}/ (report.md, summary.csv"
                   f"{'' if no_plots else ', figures'}): {computed} runs computed, {kept} kept, "
                   f"{len(state.failures)} failed, {workers} worker(s), "
                   f"{time.perf_counter() - t0:.1f} s[/dim]")
    sweep_exit(state, claims)


def sweep_exit(state, claims):
    """Exit status 1, in one line, when a run failed or a claim does not hold."""
    problems = []
    if state.failures:
        names = list(state.failures)
        problems.append(f"{len(names)} of {len(state.sweep.runs)} runs failed ({', '.join(names[:5])}"
                        f"{', …' if len(names) > 5 else ''}); their errors are in {state.folder}/failed/")
    bad = [c for c in claims if not c.passed]
    if bad:
        problems.append(f"{len(bad)} of {len(claims)} claims do not hold ("
                        + "; ".join(c.claim.text for c in bad[:3]) + ("; …" if len(bad) > 3 else "") + ")")
    if problems:
        from .errors import RunError

        raise RunError("; ".join(problems) + ".")


def run_with_bar(spec, out, workers, fresh, plots, messages, executor=None):
    """run_sweep with a rich progress bar on stderr: runs done, running, failed, ETA (and on a
    cluster its workers and the runs on each)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from .sweep import run_sweep

    class ClusterColumn(ProgressColumn):
        """The cluster's workers and the runs on each, e.g. "· 2 workers: 1 1", asked once a second."""
        max_refresh = 1.0

        def render(self, task):
            return f"· {executor.status()}"

    if messages.quiet:
        return run_sweep(spec, out, jobs=workers, fresh=fresh, plots=plots, executor=executor)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("runs · {task.fields[running]} running · {task.fields[failed]} failed"
                          "{task.fields[kept]}"),
               *([ClusterColumn()] if executor is not None else []),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=messages, transient=False) as bar:
        task = bar.add_task(spec.name, total=None, running=0, failed=0, kept="")

        def on_event(event, run, p):
            kept = f" · {p.skipped} kept" if p.skipped else ""
            bar.update(task, total=p.total, completed=p.done + p.failed, running=p.running,
                       failed=p.failed, kept=kept)

        return run_sweep(spec, out, jobs=workers, fresh=fresh, plots=plots, on_event=on_event,
                         executor=executor)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-check", is_flag=True, help="Do not check the claims (expect:).")
@click.option("--no-plots", is_flag=True, help="Do not draw the comparison figures.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@translate
def report(folder, no_check, no_plots, quiet):
    """Rebuild summary.csv, the comparison figures and report.md of a sweep FOLDER from its saved
    results, without computing anything (a folder without sweep.yaml, e.g. results/, is reported as
    the runs it holds)."""
    from . import report as reporting
    from .sweep import load_sweep, sweep_lock

    spec, state = load_sweep(folder)
    console, messages = consoles(quiet)
    with sweep_lock(folder):  # not while a sweep writes this folder
        claims = reporting.build(spec, state, plots=not no_plots, check=not no_check)
    console.print(reporting.runs_table(spec, state))
    if claims:
        console.print(reporting.claims_table(claims))
    messages.print(f"[dim]Wrote {folder}/report.md, summary.csv{'' if no_plots else ' and figures'} "
                   f"from {len(state.results)} run{'s' if len(state.results) != 1 else ''}[/dim]")
    sweep_exit(state, claims)


# --- theory ------------------------------------------------------------------------------------------

@cli.command("theory")
@click.option("--act", default="tanh", show_default=True,
              help="Activation spec, e.g. relu or leaky_relu:negative_slope=0.2; see 'actstats activations'.")
@click.option("--init", help="Weight init spec to place on the diagram (default: the classic inits).")
@click.option("--bias-init", default="zeros", show_default=True, help="Bias init spec, e.g. normal:std=0.1.")
@click.option("--width", type=int, default=500, show_default=True,
              help="Units per layer of the square net (sets sigma_w^2 of fixed-std inits such as normal:std=0.01).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Folder that receives theory-<act>[_<init>][_b<bias init>]/phase.png.")
@click.option("--no-plots", is_flag=True, help="Do not draw the phase diagram.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@translate
def theory_command(act, init, bias_init, width, out, no_plots, as_json, quiet):
    """Mean-field theory of an init: the fixed point q*, chi_1, the depth scale xi_c and the phase
    (ordered, critical, chaotic), and the phase diagram over (sigma_w^2, sigma_b^2) with chi_1 as
    colour, the critical line chi_1 = 1 and the classic inits marked.

    \b
    Examples:
      actstats theory --act tanh                         # the classic inits; results/theory-tanh/phase.png
      actstats theory --act relu --init he               # critical: q* = 2, chi_1 = 1; theory-relu_he/
      actstats theory --act tanh --init normal:std=0.05 --bias-init normal:std=0.3 --width 1000
    """
    import json

    from rich.markup import escape

    from . import activations
    from . import theory as mean_field
    from .errors import ConfigError, RunError
    from .experiment import _slug
    from .render import no_prediction_lines, theory_table
    from .results import _clean, write_atomic

    if width < 1:
        raise ConfigError(f"width == {width}, must be >= 1.")
    act = activations.get(act).name
    names = [init] if init else mean_field.classic_inits(act)
    rows = [mean_field.init_summary(act, name, bias_init, width) for name in names]
    console, messages = consoles(quiet or as_json)
    path = None
    if not no_plots:
        from .plots import figure_png, phase_diagram_figure

        point = rows[0] if init and "reason" not in rows[0] else None
        highlight = (point["init"], point["sigma_w2"], point["sigma_b2"]) if point else None
        unmarked = (rows[0]["init"], rows[0]["reason"]) if init and not point else None
        # one folder per question: an --init's diagram (its star) must not replace the classic one
        folder = "_".join([f"theory-{_slug(act)}", *([_slug(init)] if init else []),
                           *([f"b{_slug(bias_init)}"] if bias_init != "zeros" else [])])
        path = out / folder / "phase.png"
        data = figure_png(phase_diagram_figure(act, width, highlight, bias_init=bias_init, unmarked=unmarked))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        except OSError as exc:
            raise RunError(f"cannot write {path}: {exc.strerror or exc}.") from None
    if as_json:
        click.echo(json.dumps(_clean({"act": act, "width": width, "q0": 1.0, "inits": rows,
                                      "phase_diagram": str(path) if path else None}),
                              indent=1, ensure_ascii=False, allow_nan=False))
    if any("reason" not in r for r in rows):
        console.print(theory_table(act, rows, width))
    for line in no_prediction_lines(rows):
        console.print(line)
    if path is not None:
        note = f" (the classic inits only: {unmarked[0]} has no prediction, so no star)" if unmarked else ""
        messages.print(f"[dim]Wrote {path}{escape(note)}[/dim]", soft_wrap=True)  # a path to copy stays one line


# --- inits, activations ------------------------------------------------------------------------------

@cli.command()
@click.argument("name", required=False)
@translate
def inits(name):
    """List the weight init schemes with their formulas, or show one in full."""
    from rich.console import Console

    from .render import init_detail, init_table

    console = Console(highlight=False)
    console.print(init_detail(name) if name else init_table())


@cli.command()
def activations():
    """List the activations and where each one saturates."""
    from rich.console import Console

    from .render import activation_table

    Console(highlight=False).print(activation_table())


def main():
    cli(prog_name="actstats")


if __name__ == "__main__":  # pragma: no cover
    main()
