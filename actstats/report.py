"""A sweep's summary from its saved results: summary.csv, the comparison figures, report.md, and the
rich tables the CLI prints. Nothing here computes a run; ``actstats report DIR`` calls ``build`` on a
folder read back by ``sweep.load_sweep``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .diagnosis import headline

SUMMARY = "summary.csv"
REPORT = "report.md"


def _show(v) -> str:
    from .sweepfile import show

    return show(v)


def sig4(x) -> str:
    """x to 4 significant figures with the trailing zeros kept (0.5830, 0.02420, 1.000e+100), so the
    numbers of a column share one precision; 0, inf and nan as they are."""
    from .claims import fmt

    x = math.nan if x is None else float(x)
    return f"{x:#.4g}" if math.isfinite(x) and x != 0 else fmt(x)


def _std_span(result) -> str:
    """Post-activation std at layer 1 and at the last layer; a layer with inf or NaN values reads
    "inf/NaN" (the std of its finite values alone, 0 where an explosion left only zeros finite, would
    read as a collapse)."""
    std = result.column("post", "std")
    bad = result.column("post", "frac_nonfinite")

    def one(i):
        return "inf/NaN" if bad[i] and bad[i] > 0 else sig4(std[i])

    return f"{one(0)} → {one(-1)}"


def summary_csv(sweep, results) -> str:
    """One tidy row per run × layer × tensor: run name, verdict, then ``results.csv_text``'s columns
    (the config fields, layer, fans, tensor, statistics)."""
    from .results import csv_text

    rows, header = [], ["run", "verdict"]
    for run in sweep.runs:
        if run.name not in results:
            continue
        result = results[run.name]
        reader = csv.DictReader(io.StringIO(csv_text(result)))
        for name in reader.fieldnames or ():
            if name not in header:
                header.append(name)
        for row in reader:
            rows.append({"run": run.name, "verdict": result.diagnosis.get("verdict", ""), **row})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def evaluate(sweep, results):
    from .claims import evaluate as check

    return check(sweep.claims, sweep, results)


def build(sweep, state, plots: bool = True, check: bool = True) -> list:
    """Write summary.csv, the figures and report.md into the sweep folder; return the claim results
    (empty when ``check`` is off)."""
    from .errors import RunError
    from .results import write_atomic

    folder = Path(state.folder)
    claims = evaluate(sweep, state.results) if check else []
    figures: dict[str, bytes] = {}
    try:
        write_atomic(folder / SUMMARY, summary_csv(sweep, state.results))
        if plots and state.results:
            from .sweep_plots import sweep_figure_bytes

            figures = state.figures if state.figures is not None else sweep_figure_bytes(sweep, state.results)
            for name, data in figures.items():
                write_atomic(folder / name, data)
        write_atomic(folder / REPORT, report_markdown(sweep, state, claims, list(figures), check))
    except OSError as exc:
        raise RunError(f"cannot write the report in {folder}: {exc.strerror or exc}.") from None
    return claims


# --- report.md -----------------------------------------------------------------------------------------

def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def where_text(claim) -> str:
    if not claim.where:
        return f"all {len(claim.runs)} runs"
    text = claim.where_text or ", ".join(f"{k}={'|'.join(map(_show, v))}" for k, v in claim.where.items())
    return text + (f" ({len(claim.runs)} runs)" if len(claim.runs) > 1 else "")


CAPTIONS = {
    "std_by_layer.png": ("Std by layer", "Every run's pre-activation std (z, top), post-activation "
                         "std (middle) and back-propagated gradient std dL/dz (bottom) by layer, on a "
                         "log axis; dashed, the mean-field prediction. A line falling by a constant "
                         "factor per layer collapses, a rising one explodes; a flat line keeps the "
                         "signal, unless it is flat at the activation's limit (tanh's std near 1 with "
                         "z std in the tens is saturation: see the saturated fraction)."),
    "last_layer.png": ("The last layer", "What is left at the output: the last layer's z std and "
                       "post-activation std, and, where they occur, the fractions of saturated and "
                       "exactly-zero outputs, by the sweep's main axes. Std colours are on a log "
                       "scale reaching at most 3 decades either side of the median cell; a cell beyond "
                       "(an exploded or collapsed run) is red above, black below, with its number."),
    "seeds.png": ("Across seeds", "The mean over seeds (line) and the spread from the smallest to the "
                  "largest seed (band): how much of a difference is the init, and how much one random "
                  "net."),
}


def report_markdown(sweep, state, claims, figures: list[str], check: bool = True) -> str:
    from . import __version__

    runs = sweep.runs
    done = [r for r in runs if r.name in state.results]
    out = [f"# Sweep `{sweep.name}`", ""]
    if sweep.description:
        out += [sweep.description, ""]
    varied = [k for k in sweep.varied]
    facts = [f"{len(runs)} run{'s' if len(runs) != 1 else ''}"]
    if varied:
        facts.append("varied: " + ", ".join(varied))
    if sweep.fixed:
        facts.append("fixed: " + ", ".join(f"{k}={_show(v)}" for k, v in sweep.fixed.items()))
    out += [" · ".join(facts) + ".", "",
            f"Sweep file `sweep.yaml` (from `{sweep.source}`); rebuild this page with "
            f"`actstats report <this folder>`; actstats {__version__}.", ""]
    missing = [r.name for r in runs if r.name not in state.results and r.name not in state.failures]
    if state.failures or missing:
        out += [f"**{len(done)} of {len(runs)} runs have results**"
                + (f"; {len(state.failures)} failed" if state.failures else "")
                + (f"; {len(missing)} not run yet" if missing else "") + ".", ""]

    if check and sweep.claims:
        held = sum(c.passed for c in claims)
        out += [f"## Claims: {held} of {len(claims)} hold", ""]
        out.append(_table(["", "claim", "runs", "observed", "expected"],
                          [[c.mark, c.claim.text, where_text(c.claim), c.observed, c.expected]
                           for c in claims]))
        failing = [c for c in claims if not c.passed]
        if failing:
            out += ["", "Where the failing claims fail:", ""]
            for c in failing:
                out.append(f"- **{_cell(c.claim.text)}**")
                out += [f"  - {line}" for line in c.failures[:8]]
                if len(c.failures) > 8:
                    out.append(f"  - … and {len(c.failures) - 8} more")
        out.append("")
    elif sweep.claims:
        out += ["## Claims", "", f"{len(sweep.claims)} claims, not checked (--no-check).", ""]

    if figures:
        out += ["## Figures", ""]
        for name in figures:
            title, caption = CAPTIONS.get(name, (name, ""))
            out += [f"### {title}", "", f"![{title}]({name})", "", caption, ""]

    if done:
        out += ["## Runs", ""]
        rows = []
        for r in done:
            res = state.results[r.name]
            verdict = res.diagnosis.get("verdict", "")
            text = "; ".join(f.get("text", "") for f in headline(res.diagnosis))
            rows.append([f"`{r.name}`", *[_show(r.varied[k]) for k in varied], verdict, _std_span(res), text])
        out.append(_table(["run", *varied, "verdict", "post std, layer 1 → last", "diagnosis"], rows))
        out.append("")
    if state.failures:
        out += ["## Failed runs", ""]
        for name, rec in state.failures.items():
            out.append(f"- `{name}`: {rec.get('error', '')}: {_cell(rec.get('message', ''))} "
                       f"(details in `failed/{name}.json`)")
        out.append("")
    if missing:
        out += ["## Not run yet", "", ", ".join(f"`{n}`" for n in missing), ""]
    out += ["## Files", "",
            "- `summary.csv`: one row per run × layer × tensor (pre, post, grad_pre, grad_weight), "
            "with the run's name, verdict and config fields as columns.",
            "- one folder per run, as `actstats run` writes it: `stats.json`, `stats.csv`, `config.yaml`, "
            "`histograms.npz` and its figures.",
            "- `sweep.yaml`: the sweep as run; from this folder's parent folder, "
            "`actstats sweep <this folder>/sweep.yaml --out .` resumes it (completed runs are kept).", ""]
    return "\n".join(out)


# --- terminal ------------------------------------------------------------------------------------------

def claims_table(claims):
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Claims", title_justify="left", header_style="bold")
    table.add_column("", width=1)
    table.add_column("claim", overflow="fold", ratio=3)
    table.add_column("observed", overflow="fold", ratio=2)
    table.add_column("expected", overflow="fold", ratio=2)
    for c in claims:
        mark = Text("✓", style="green") if c.passed else Text("✗", style="red")
        observed = c.observed if c.passed else c.failures[0] if c.failures else c.observed
        if not c.passed and len(c.failures) > 1:
            observed += f" (and {len(c.failures) - 1} more)"
        table.add_row(mark, Text(c.claim.text), Text(observed), Text(c.expected))
    return table


def runs_table(sweep, state, limit: int = 40):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Sweep {sweep.name}: {len(sweep.runs)} runs", title_justify="left",
                  header_style="bold")
    table.add_column("run", overflow="fold")
    table.add_column("verdict")
    table.add_column("post std 1 → L", justify="right")
    table.add_column("note", style="dim")
    shown = 0
    for r in sweep.runs:
        if shown >= limit:
            table.add_row(f"… {len(sweep.runs) - limit} more (see report.md)", "", "", "")
            break
        shown += 1
        status = state.status.get(r.name, "missing")
        if r.name in state.results:
            res = state.results[r.name]
            table.add_row(r.name, res.diagnosis.get("verdict", ""), _std_span(res),
                          "kept" if status == "skipped" else "")
        elif r.name in state.failures:
            rec = state.failures[r.name]
            table.add_row(r.name, Text("failed", style="red"), "",
                          Text(f"{rec.get('error')}: {rec.get('message', '')}"[:100]))
        else:
            table.add_row(r.name, "–", "", status)
    return table
