"""Comparison figures of a sweep: each function takes the sweep and its results and returns a Figure.

- ``profiles_figure``: std by layer of every run overlaid, post-activations and gradients, one panel
  per activation, log axis.
- ``heatmap_figure``: the last layer's std (and saturated / zero fractions) over the grid's two main
  axes.
- ``seeds_figure``: for ``seeds:``, the mean across seeds as a line and the spread (min to max) as a
  band.

matplotlib is imported inside the functions (Agg, no pyplot), so importing this module is cheap.
"""

from __future__ import annotations

import math

import numpy as np

from .diagnosis import layer_ranges
from .plots import DPI, figure_png, log_limits, log_ticks
FILES = {"profiles": "std_by_layer.png", "heatmap": "last_layer.png", "seeds": "seeds.png"}
ROWS = (("pre", "pre-activation std (z)"), ("post", "post-activation std"),
        ("grad_pre", "gradient dL/dz std"))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _show(v) -> str:
    from .sweepfile import show

    return show(v)


def _complete(sweep, results) -> list:
    return [r for r in sweep.runs if r.name in results]


def _label(run, drop=()) -> str:
    """The run's label without the fields in ``drop`` (those a panel or a band already says)."""
    parts = [p for p in run.label.split(", ") if p.split("=", 1)[0] not in drop]
    return ", ".join(parts) or run.name


def _subtitle(sweep, runs, extra: str = "") -> str:
    """What varied, how many runs, and what all runs share."""
    named = any(r.entry for r in runs)
    varied = [k for k in sweep.varied if k != "seed"]
    if named:  # a runs: entry's name stands for the fields it sets
        varied = ["named runs"] + [k for k in sweep.axes if k != "seed"]
    bits = ["varied: " + " × ".join(varied)] if varied else []
    if sweep.seeds:
        bits.append(f"{len(sweep.seeds)} seeds")
    bits.append(f"{len(runs)} runs")
    shown = [f"{k}={_show(v)}" for k, v in sweep.fixed.items()
             if k in ("act", "init", "bias_init", "layers", "width", "input_dim", "batch", "input")]
    if shown:
        bits.append("fixed: " + ", ".join(shown))
    return " · ".join(bits) + (f" · {extra}" if extra else "")


def _suptitle(fig, first: str, second: str):
    """Title and a subtitle wrapped to the figure's width (about 0.085 in per character at 11 pt)."""
    import textwrap

    chars = max(40, int(fig.get_figwidth() / 0.085))
    lines = textwrap.wrap(first, chars) + textwrap.wrap(second, int(chars * 1.1))
    fig.suptitle("\n".join(lines), fontsize=11)


def _colors(n: int):
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0, 0.95, n)]


STYLES = ("-", "-.", ":")  # runs beyond 10 colours; "--" is kept for the mean-field prediction
# wide and translucent, on top: a prediction that lies on its measurement shows as a beaded band
THEORY_STYLE = dict(linestyle=(0, (2.5, 1.5)), linewidth=3.6, alpha=0.4, zorder=3)
THEORY_LABEL = "dashed: mean-field prediction"


TWIN_RTOL = 0.02  # two runs this close at every layer draw as one line; the legend says so


def _close(a: tuple, b: tuple) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:  # runs of different depths are never twins
        return False
    return bool(np.all(np.isfinite(a) & np.isfinite(b))) and bool(np.allclose(a, b, rtol=TWIN_RTOL, atol=0))


def _theory_column(result, tensor: str) -> np.ndarray | None:
    """The predicted std of ``tensor`` by layer (stats.json ``layers[i].theory``), or None."""
    if not all(layer.get("theory") for layer in result.layers):
        return None
    return np.array([layer["theory"].get(f"{tensor}_std", np.nan) for layer in result.layers], dtype=float)


def _legend(fig, handles, labels, width: float, wrap: int = 48):
    """A legend under the panels, in as many columns as the width allows; long labels wrap."""
    import textwrap

    if not labels:
        return 0
    labels = ["\n  ".join(textwrap.wrap(s, wrap, break_on_hyphens=False)) or s for s in labels]
    longest = max(len(line) for s in labels for line in s.split("\n"))
    per = 0.75 + 0.062 * longest
    ncol = max(1, min(len(labels), int(width // per)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    lines_per_row = [max(s.count("\n") + 1 for s in labels[i::ncol]) for i in range(ncol)]
    return math.ceil(len(labels) / ncol) * max(lines_per_row)


def _acts(runs) -> list[str]:
    return list(dict.fromkeys(r.config.act for r in runs))


def _panel_width(n_cols: int) -> float:
    return max(7.0, 4.4 * n_cols)


def _panel_height(n_rows: int, legend_rows: int) -> float:
    return 2.6 * n_rows + 1.0 + 0.2 * legend_rows


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)


def _note(columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Why a line is missing or short on a log axis: exact zeros, or values past the float range;
    ``columns`` maps a row's short name (z, a, dL/dz) to its std and its non-finite fraction by
    layer. A layer with inf or NaN values is said to have them, even where the std of its finite
    values is 0 or finite."""
    notes = []
    for short, (v, nonfinite) in columns.items():
        n = len(v)
        overflow = ~np.isfinite(v) | (nonfinite > 0)
        for what, mask in (("0", (v == 0) & ~overflow), ("inf", overflow)):
            layers = list(np.flatnonzero(mask) + 1)
            if layers:
                where = "every layer" if len(layers) == n else layer_ranges(layers)
                notes.append(f"{short} std {what} at {where}")
    return f" ({'; '.join(notes)})" if notes else ""


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Plain numbers on 1-2-5 (or finer) ticks when a log axis spans less than ~2 decades."""
    if not (0 < lo and hi / lo < 150):
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if hi / lo >= 4 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _positive_range(ax) -> tuple[float, float] | None:
    """The smallest and largest positive finite value of the lines drawn on ``ax``."""
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]
    ys = np.concatenate(ys) if ys else np.empty(0)
    ys = ys[np.isfinite(ys) & (ys > 0)]
    return (float(ys.min()), float(ys.max())) if ys.size else None


def _style_axes(ax, title: str, ylabel: str | None, xlabel: bool):
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=10)
    data = _positive_range(ax)
    extreme = data is not None and (data[1] > 1e300 or data[0] < 1e-300)
    if extreme:  # limits before the log scale: matplotlib's margins and ticks would leave the float range
        ax.set_ylim(*log_limits(*data))
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    last = max(1.5, ax.get_xlim()[1])
    if last < 12.5:
        ax.set_xticks(range(1, int(last + 0.5) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    ax.set_xlim(0.5, last)
    if extreme:
        log_ticks(ax, *data)
    lo, hi = map(float, ax.get_ylim())  # Python floats: a ratio past the float range is inf, not a warning
    if 0 < lo and hi / lo < 10:  # at least a decade, so that noise does not look like a trend
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
        ax.set_ylim(lo, hi)
    _log_ticks(ax.yaxis, lo, hi)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if xlabel:
        ax.set_xlabel("layer", fontsize=9)
    ax.tick_params(labelsize=8)


def _empty(ax, text: str):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
    ax.set_yscale("linear")
    ax.set_yticks([])


def profiles_figure(sweep, results):
    """Every run's pre-activation, post-activation and gradient std by layer; one column per
    activation. Lines of one configuration (its seeds) share a colour."""
    runs = _complete(sweep, results)
    acts = _acts(runs)
    by_act = len(acts) > 1
    drop = ("act", "seed") if by_act else ("seed",)
    groups = list(dict.fromkeys(_label(r, drop) for r in runs))
    colors = dict(zip(groups, _colors(len(groups))))
    styles = {g: STYLES[(i // 10) % len(STYLES)] if len(groups) > 10 else "-" for i, g in enumerate(groups)}
    rows = [row for row in ROWS if any(row[0] in results[r.name].tensors for r in runs)]
    width = _panel_width(len(acts))
    fig = _figure(width, _panel_height(len(rows), 0))  # its height is final once the legend is drawn
    axes = np.atleast_2d(fig.subplots(len(rows), len(acts), squeeze=False, sharex="col"))
    handles: dict[str, object] = {}
    theory_handle = None
    short = {"pre": "z", "post": "a", "grad_pre": "dL/dz"}
    first = {}  # group -> its first run, for the notes and for spotting identical numbers
    for r in runs:
        first.setdefault(_label(r, drop), r)
    notes = {g: _note({short[t]: (np.asarray(results[r.name].column(t, "std"), dtype=float),
                                  np.asarray(results[r.name].column(t, "frac_nonfinite"), dtype=float))
                       for t, _ in rows}) for g, r in first.items()}
    profile = {g: tuple(results[r.name].column("post", "std")) + tuple(results[r.name].column("pre", "std"))
               for g, r in first.items()}
    hollow = set()  # a line drawn on top of an earlier one gets open markers, so both show
    for g in groups:  # two schemes that coincide here (xavier and lecun when fan_in == fan_out)
        same_act = [h for h in groups[:groups.index(g)] if first[h].config.act == first[g].config.act]
        twin = next((h for h in same_act if profile[h] == profile[g]), None)
        near = next((h for h in same_act if _close(profile[h], profile[g])), None)
        if twin:
            notes[g] += f" (same numbers as {twin})"
        elif near:
            notes[g] += f" (open dots: lies on {near}, within {TWIN_RTOL:.0%} at every layer)"
        if twin or near:
            hollow.add(g)
    for j, act in enumerate(acts):
        for i, (tensor, title) in enumerate(rows):
            ax = axes[i, j]
            drawn = False
            predicted = set()  # one dashed line per configuration (its seeds share the prediction)
            for run in (r for r in runs if r.config.act == act):
                res = results[run.name]
                y = np.asarray(res.column(tensor, "std"), dtype=float)
                x = np.arange(1, len(y) + 1)
                g = _label(run, drop)
                alpha = 0.55 if sweep.seeds and len(sweep.seeds) > 1 else 0.95
                open_dots = dict(mfc="none", mew=1.2) if g in hollow else {}
                (line,) = ax.plot(x, _positive(y), color=colors[g], linestyle=styles[g], linewidth=1.4,
                                  marker="o" if len(y) <= 12 else None,
                                  markersize=(7 if open_dots else 3) if len(y) > 1 else 7,
                                  alpha=alpha, **open_dots)
                handles.setdefault(g, line)
                theory = _theory_column(res, tensor)
                if theory is not None and g not in predicted:
                    predicted.add(g)
                    (dashed,) = ax.plot(x, _positive(theory), color=colors[g], **THEORY_STYLE,
                                        label=THEORY_LABEL)
                    theory_handle = theory_handle or dashed
                drawn = drawn or bool(np.any(np.isfinite(_positive(y))))
            panel = f"act = {act}: {title}" if by_act else title
            _style_axes(ax, panel, "std (log scale)" if j == 0 else None, i == len(rows) - 1)
            if not drawn:
                _empty(ax, "no positive finite values to show\n(std 0 or not finite in every layer)")
    labels = [g + notes.get(g, "") for g in handles]
    if theory_handle is not None:
        from matplotlib.lines import Line2D

        handles[THEORY_LABEL] = Line2D([], [], color="0.3", **THEORY_STYLE)
        labels.append(THEORY_LABEL)
    n_legend = _legend(fig, list(handles.values()), labels, width)
    fig.set_figheight(_panel_height(len(rows), n_legend))
    what = "every run" + (", panels by activation" if by_act else "")
    _suptitle(fig, f"{sweep.name}: std by layer, {what}", _subtitle(sweep, runs))
    return fig


RUN_AXIS = "run"  # pseudo-axis: the names of the runs: entries


def _heat_axes(sweep, runs) -> list[str]:
    """The grid's two main axes; then the names of runs: entries; then other fields that vary."""
    keys = [k for k in sweep.axes if k != "seed"][:2]
    if len(keys) < 2 and any(r.entry for r in runs):
        return keys + [RUN_AXIS]
    for k in sweep.varied:
        if len(keys) >= 2:
            break
        if k not in keys and k != "seed":
            keys.append(k)
    return keys


def _axis_value(run, key: str) -> str:
    if key == RUN_AXIS:
        return run.entry or run.label
    return _show(run.varied[key])


def _cell_value(posts: list[dict], stat: str) -> float:
    """One number per cell: the geometric mean of std over the runs in it (std spans decades), the
    mean of a fraction."""
    vals = np.array([p.get(stat, np.nan) for p in posts], dtype=float)
    if stat != "std":
        return float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else math.nan
    if np.any(~np.isfinite(vals)):
        return math.inf
    if np.all(vals == 0):
        return 0.0
    return float(np.exp(np.mean(np.log(vals[vals > 0]))))


def heatmap_figure(sweep, results):
    """The last layer's std, saturated and zero fractions over the grid's two main axes (columns and
    rows); one long axis is drawn as rows. None when nothing varies."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    from .activations import get as get_act

    runs = _complete(sweep, results)
    keys = _heat_axes(sweep, runs)
    if not runs or not keys:
        return None
    col_key, row_key = (keys + [None])[:2]
    cols = list(dict.fromkeys(_axis_value(r, col_key) for r in runs))
    if row_key is None and len(cols) > 6:  # one long axis reads better down the page
        col_key, row_key = None, col_key
    cols = list(dict.fromkeys(_axis_value(r, col_key) for r in runs)) if col_key else [""]
    rows = list(dict.fromkeys(_axis_value(r, row_key) for r in runs)) if row_key else [""]
    cells: dict[tuple[int, int], list] = {}
    for r in runs:
        x = cols.index(_axis_value(r, col_key)) if col_key else 0
        y = rows.index(_axis_value(r, row_key)) if row_key else 0
        cells.setdefault((y, x), []).append(results[r.name].layers[-1])
    others = [k for k in sweep.varied if k not in keys] if RUN_AXIS not in keys else \
        [k for k in sweep.varied if k in sweep.axes and k not in keys] + (["seed"] if sweep.seeds else [])
    averaged = any(len(v) > 1 for v in cells.values())
    # z's std explains the rest: a wide z saturates tanh/sigmoid (C4, C11), a tiny one collapses
    panels = [("pre", "std", "z std (pre-activation), last layer"), ("post", "std", "a std, last layer")]
    if any(get_act(r.config.act).saturates for r in runs):
        panels.append(("post", "frac_saturated", "saturated fraction, last layer"))
    if any(l["post"].get("frac_zero", 0) and l["post"]["frac_zero"] > 0 for v in cells.values() for l in v):
        panels.append(("post", "frac_zero", "fraction exactly 0, last layer"))

    long_col = max(len(c) for c in cols) > 8
    row_chars = max(len(r) for r in rows)
    pw = max(3.0, 0.8 * len(cols) + 1.5 + 0.06 * row_chars + (0.05 * max(map(len, cols)) if long_col else 0))
    ph = max(1.8, 0.36 * len(rows) + 1.0 + (0.06 * max(map(len, cols)) if long_col else 0))
    side = pw * len(panels) <= 14          # side by side, or stacked when that would be too wide
    n_rows, n_cols = (1, len(panels)) if side else (len(panels), 1)
    fig = _figure(max(6.5, pw * n_cols), ph * n_rows + 1.0)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for i, (ax, (tensor, stat, title)) in enumerate(zip(axes, panels)):
        grid = np.full((len(rows), len(cols)), np.nan)
        for (y, x), layers in cells.items():
            grid[y, x] = _cell_value([l[tensor] for l in layers], stat)
        extend = "neither"
        if stat == "std":
            shown = np.where(np.isfinite(grid) & (grid > 0), grid, np.nan)
            lo, hi = _std_limits(shown[np.isfinite(shown)])
            extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
                      (True, True): "both"}[bool(np.nanmin(shown, initial=lo) < lo),
                                            bool(np.nanmax(shown, initial=hi) > hi)]
            cmap = colormaps["viridis"].with_extremes(under=STD_UNDER, over=STD_OVER)
            image = ax.imshow(shown, cmap=cmap, norm=LogNorm(lo, hi), aspect="auto")
        else:
            shown = grid
            image = ax.imshow(shown, cmap="Reds" if stat == "frac_saturated" else "Blues", vmin=0, vmax=1,
                              aspect="auto")
        ax.set_facecolor("0.85")  # no run there
        for (y, x), v in np.ndenumerate(grid):
            rgba = image.cmap(image.norm(shown[y, x])) if np.isfinite(shown[y, x]) else (0.85, 0.85, 0.85, 1)
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            ax.text(x, y, _cell(v, stat), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
        if col_key:
            ax.set_xticks(range(len(cols)), cols, rotation=30 if long_col else 0,
                          ha="right" if long_col else "center", fontsize=8)
        else:
            ax.set_xticks([])
        ax.set_yticks(range(len(rows)), rows if (side and i == 0) or not side else [""] * len(rows),
                      fontsize=8)
        if col_key:
            ax.set_xlabel(col_key, fontsize=9)
        if row_key and (not side or i == 0):
            ax.set_ylabel(row_key, fontsize=9)
        ax.set_title(title, fontsize=10)
        cb = fig.colorbar(image, ax=ax, shrink=0.9, extend=extend)
        if stat == "std":
            _log_ticks(cb.ax.yaxis, lo, hi)
        cb.ax.tick_params(labelsize=7)
    extra = ""
    if averaged:
        extra = "cells average over " + (", ".join(others) if others else "repeated runs") + \
            " (std: geometric mean)"
    over = " × ".join("runs" if k == RUN_AXIS else k for k in keys)
    _suptitle(fig, f"{sweep.name}: the last layer, by {over}", _subtitle(sweep, runs, extra))
    return fig


STD_DECADES = 3  # a std panel's colours reach at most this many decades either side of its median cell
STD_UNDER, STD_OVER = "black", "#d62728"  # cells below / above that range (the colour bar's arrows)


def _std_limits(values: np.ndarray) -> tuple[float, float]:
    """Log colour limits of a std panel from its positive finite cells: their range, but no further
    than STD_DECADES decades from the median cell, so that one exploded (or collapsed) run does not
    paint every other cell one colour; the cells beyond get STD_UNDER/STD_OVER and keep their number."""
    if not values.size:
        return 0.1, 1.0
    logs = np.log10(values)
    middle = np.percentile(logs, 50, method="lower")  # a cell's own value: the window holds one at least
    kept = values[np.abs(logs - middle) <= STD_DECADES]
    lo, hi = float(kept.min()), float(kept.max())
    return (lo / 3.2, hi * 3.2) if hi / lo < 10 else (lo, hi)


def _cell(v: float, stat: str) -> str:
    if math.isnan(v):
        return "–"
    if stat != "std":
        return f"{100 * v:.0f}%" if v >= 0.01 or v == 0 else f"{100 * v:.1g}%"
    if math.isinf(v):
        return "inf"
    if v == 0:
        return "0"
    return f"{v:.2g}" if 1e-2 <= v < 1e3 else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def seeds_figure(sweep, results):
    """Mean across seeds (line) and min–max spread (band), per configuration; None without seeds."""
    runs = _complete(sweep, results)
    if len(sweep.seeds) < 2 or not runs:
        return None
    acts = _acts(runs)
    by_act = len(acts) > 1
    drop = ("act", "seed") if by_act else ("seed",)
    groups: dict[tuple[str, str], list] = {}
    for r in runs:
        groups.setdefault((r.config.act, _label(r, drop)), []).append(r)
    labels = list(dict.fromkeys(g for _, g in groups))
    colors = dict(zip(labels, _colors(len(labels))))
    rows = [row for row in ROWS if any(row[0] in results[r.name].tensors for r in runs)]
    width = _panel_width(len(acts))
    fig = _figure(width, _panel_height(len(rows), 0))  # its height is final once the legend is drawn
    axes = fig.subplots(len(rows), len(acts), squeeze=False, sharex="col")
    handles = {}
    for j, act in enumerate(acts):
        for i, (tensor, title) in enumerate(rows):
            ax = axes[i, j]
            drawn = False
            for (a, g), members in groups.items():
                if a != act:
                    continue
                ys = [np.asarray(results[m.name].column(tensor, "std"), dtype=float) for m in members]
                depth = min(len(y) for y in ys)
                stack = np.array([y[:depth] for y in ys])
                x = np.arange(1, depth + 1)
                with np.errstate(invalid="ignore"):
                    mean = stack.mean(axis=0)
                lo, hi = stack.min(axis=0), stack.max(axis=0)
                (line,) = ax.plot(x, _positive(mean), color=colors[g], linewidth=1.6,
                                  marker="o" if depth <= 12 else None, markersize=3)
                ax.fill_between(x, _positive(lo), _positive(hi), color=colors[g], alpha=0.22, linewidth=0)
                handles.setdefault(f"{g} ({len(members)} seeds)", line)
                drawn = drawn or bool(np.any(np.isfinite(_positive(mean))))
            panel = f"act = {act}: {title}" if by_act else title
            _style_axes(ax, panel, "std (log scale)" if j == 0 else None, i == len(rows) - 1)
            if not drawn:
                _empty(ax, "no positive finite values to show")
    n_legend = _legend(fig, list(handles.values()), list(handles), width)
    fig.set_figheight(_panel_height(len(rows), n_legend))
    seeds = sweep.seeds
    seed_text = f"seeds {seeds[0]}–{seeds[-1]}" if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) \
        else "seeds " + ", ".join(map(str, seeds))
    _suptitle(fig, f"{sweep.name}: mean across {seed_text} (line) and min–max spread (band)",
              _subtitle(sweep, runs))
    return fig


def figure_bytes(key: str, sweep, results) -> bytes | None:
    """PNG bytes of one comparison figure (a key of FILES), None when it does not apply."""
    make = {"profiles": profiles_figure, "heatmap": heatmap_figure, "seeds": seeds_figure}[key]
    fig = make(sweep, results)
    return None if fig is None else figure_png(fig)


def sweep_figure_bytes(sweep, results, executor=None) -> dict[str, bytes]:
    """{file name: PNG bytes} of every figure that applies to this sweep. ``executor`` (executors.py's
    interface): draw the figures side by side in its workers (each takes a second or two of
    matplotlib); without one they are drawn here, one after the other."""
    if not _complete(sweep, results):
        return {}
    if executor is None:
        drawn = {key: figure_bytes(key, sweep, results) for key in FILES}
    else:
        futures = {executor.submit(figure_bytes, key, sweep, results): key for key in FILES}
        drawn = {futures[f]: f.result() for f in executor.as_completed(list(futures))}
    return {FILES[key]: drawn[key] for key in FILES if drawn[key] is not None}
