"""The command line: parse, check option conflicts, call the engine, render with rich.

Every error a user can cause ends as one ``Error: ...`` line on stderr: usage errors exit 2,
failures exit 1, never a traceback (set ACTSTATS_DEBUG=1 to see one for an unexpected error).
Heavy modules (numpy, rich, matplotlib) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

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
        except click.Abort:
            click.echo("Aborted.", err=True)
            code = 1
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            code = 130
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
        click.option("--chunk-size", type=int, help="Rows per chunk (default: automatic, bounded memory)."),
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
        return RunConfig.from_yaml(config_file, overrides)
    return RunConfig.from_dict(overrides)


def output_dir(out: Path, name: str | None, config, overwrite: bool) -> Path:
    """results/<name>; never silently replaces a complete result of a different run."""
    from .errors import ConfigError
    from .experiment import config_hash, default_name
    from .results import stored_config

    path = out / (name or default_name(config))
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
