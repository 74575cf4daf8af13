"""Figures of one run: the per-layer histograms (the CS231n look) and the per-layer profile.

    >>> fig = histograms_figure(result)        # post-activations on top, gradients dL/dz below
    >>> fig = profile_figure(result)           # std, mean, saturated/zero fractions, gradient std
    >>> save_run_figures(result, Path("out"))  # out/histograms.png, out/profile.png

Each function returns a ``matplotlib.figure.Figure`` drawn on an Agg canvas. matplotlib is imported
inside the functions (``actstats --help`` stays fast) and pyplot is never used, so no global figure
registry holds on to a figure: once the caller drops it, it is freed.

The numbers may be awkward, and every figure must still draw without a warning: std exactly 0 (zero
init), 1e160 or inf/NaN (explosion), a layer whose values are all equal. Log axes draw only positive,
finite values, and the legend says which layers were left out and why.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from pathlib import Path

import numpy as np

from .diagnosis import headline, layer_ranges, unjudged

DPI = 100
MAX_PANELS = 10                      # histogram columns; deeper nets show evenly spaced layers
HUGE = 1e307                         # axis limits stay inside this, so hi - lo cannot overflow
COLORS = {"pre": "#1f77b4", "post": "#d62728", "grad_pre": "#2ca02c", "grad_weight": "#9467bd",
          "saturated": "#ff7f0e", "zero": "#1f77b4", "dead": "#7f7f7f", "nonfinite": "#000000"}
ROWS = {  # histogram rows: tensor -> (row title, x label)
    "post": ("post-activation a = φ(z)", "a = φ(z)"),
    "grad_pre": ("gradient dL/dz (back-propagated from the output)", "dL/dz"),
}
TITLE_PT, LINE = 11, 0.21            # figure title: font size, inches per line


# -- small helpers ---------------------------------------------------------------------------------

def _num(value) -> float:
    """A plain float; None, strings and other junk become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _exp(text: str) -> str:
    """'3.3e+03' -> '3.3e3', '1e-05' -> '1e-5'."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", text)


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else _exp(f"{x:.2g}")


def shown_layers(n_layers: int, most: int = MAX_PANELS) -> list[int]:
    """0-based indices of at most ``most`` evenly spaced layers, first and last included."""
    if n_layers <= most:
        return list(range(n_layers))
    return sorted({int(round(i)) for i in np.linspace(0, n_layers - 1, most)})


def _stat(layer: dict, tensor: str, key: str) -> float:
    return _num((layer.get(tensor) or {}).get(key))


def _column(result, tensor: str, key: str) -> np.ndarray:
    return np.array([_stat(layer, tensor, key) for layer in result.layers], dtype=float)


def _theory(result, key: str) -> np.ndarray | None:
    """Predicted values per layer from ``layer["theory"][key]``, or None when there are none."""
    values = np.array([_num((layer.get("theory") or {}).get(key)) for layer in result.layers])
    return values if np.isfinite(values).any() else None


def _finding_lines(result) -> list[str]:
    """The verdict's text, then the other pass's (activations or gradients), if any."""
    diag = result.diagnosis or {}
    verdict = diag.get("verdict", "?")
    found = headline(diag)
    texts = [f.get("text", "") for f in found] + [t for t in [unjudged(diag, result.config.backward)] if t]
    if found and found[0].get("code") == verdict:
        return [f"verdict: {verdict} — {texts[0]}"] + texts[1:]
    return [f"verdict: {verdict}"] + texts


def _title(result, width: float, first: str | None = None) -> tuple[str, float]:
    """Config, verdict and gradient finding, wrapped to ``width`` inches; (text, height in inches)."""
    chars = int(width * 72 / (0.55 * TITLE_PT))  # an average glyph is ~0.55 em wide
    from .render import config_line

    lines = [config_line(result.config)] + ([first] if first else []) + _finding_lines(result)
    text = "\n".join(textwrap.fill(line, chars) for line in lines if line)
    return text, 0.2 + LINE * (text.count("\n") + 1)


def _new_figure(width: float, height: float, title: str):
    """A Figure on an Agg canvas (no pyplot), its title 0.1 in below the top edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=TITLE_PT, y=1 - 0.1 / height, va="top")
    return fig


# -- layout and ticks -------------------------------------------------------------------------------
# The figures are laid out by hand, in inches, rather than by a layout engine: a constrained layout
# draws every tick label twice, and tick objects are what make matplotlib slow (a 20-panel figure
# saved in 2.2 s with it, well under 1 s without). Ticks are few and computed once per row.

def _place(fig, left, bottom, width, height, **kw):
    """An Axes at a rectangle given in inches from the figure's bottom-left corner."""
    W, H = fig.get_size_inches()
    return fig.add_axes((left / W, bottom / H, width / W, height / H), **kw)


def _tick_labels(ticks) -> list[str]:
    """Shortest labels (significant digits) that still tell every tick apart."""
    ticks = list(ticks)
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:])), default=1.0)
    labels = []
    for digits in range(2, 10):
        labels = ["0" if abs(t) <= 1e-9 * step else _exp(f"{t:.{digits}g}") for t in ticks]
        if len(set(labels)) == len(labels):
            break
    return labels


def _linear_ticks(lo: float, hi: float, n: int) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    eps = 1e-9 * (hi / 2 - lo / 2)
    return [float(t) for t in ticks if lo - eps <= t <= hi + eps]


def _compact(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:g}"


# -- histograms ------------------------------------------------------------------------------------
PANEL_W, PANEL_H, GAP = 1.35, 1.5, 0.5      # inches: panel, space between panels of a row
LEFT, RIGHT = 0.8, 0.25                     # margins: "count" and its tick labels on the left
ROW_TITLE, PANEL_TITLE, BELOW = 0.32, 0.42, 0.62
HEADROOM = 1.35                             # y limit over the tallest bar: room for the notes
ZERO_CUT = 3.0                              # a bar of zeros this many times the rest is cut (_zero_spike)
ZERO_NOTE = 0.05                            # ... and from this fraction of exact zeros the panel says so
CUT_HEADROOM = 1.6                          # a cut panel's y limit over the other bars: room for the break


def _hist(result, tensor: str):
    """(edges (L, bins+1), counts (L, bins)) of ``tensor``, or None when the run has none."""
    h = result.histograms or {}
    edges, counts = h.get(f"{tensor}_edges"), h.get(f"{tensor}_counts")
    if edges is None or counts is None or len(counts) != len(result.layers):
        return None
    return np.asarray(edges, dtype=float), np.asarray(counts)


def _fixed_range(result, tensor: str, edges: np.ndarray):
    """The fixed histogram range of a bounded activation's post ([-1, 1] for tanh), else None."""
    if tensor != "post":
        return None
    try:
        from . import activations

        fixed = activations.get(result.config.act).post_range
    except Exception:  # an activation this version does not know: fall back to the data
        return None
    if fixed is None or not np.allclose(edges[:, [0, -1]], fixed):
        return None
    return tuple(map(float, fixed))


def _row_limits(result, tensor, edges, counts, idx) -> tuple[float, float]:
    """Shared x range of a row: the non-empty bins of the shown layers, padded."""
    lo, hi = math.inf, -math.inf
    for i in idx:
        nz = np.flatnonzero(counts[i])
        if nz.size:
            lo, hi = min(lo, edges[i, nz[0]]), max(hi, edges[i, nz[-1] + 1])
    if lo > hi:  # nothing finite anywhere
        return -1.0, 1.0
    lo, hi = max(float(lo), -HUGE), min(float(hi), HUGE)
    lows = [_stat(result.layers[i], tensor, "min") for i in idx]
    highs = [_stat(result.layers[i], tensor, "max") for i in idx]
    if all(a == b for a, b in zip(lows, highs) if not math.isnan(a)):
        # every shown layer is constant (bins of width 2**-1000 for zeros): centre on the values
        vals = [a for a in lows if not math.isnan(a)] or [0.0]
        pad = max(1.0, 0.5 * max(abs(v) for v in vals))
        return max(min(vals) - pad, -HUGE), min(max(vals) + pad, HUGE)
    pad = 0.08 * (hi / 2 - lo / 2)  # halves: no overflow near the float limit
    return max(lo - pad, -HUGE), min(hi + pad, HUGE)


def _panel_notes(result, tensor, i, has_data) -> list[str]:
    layer = result.layers[i]
    notes = []
    lo, hi = _stat(layer, tensor, "min"), _stat(layer, tensor, "max")
    if has_data and lo == hi:
        notes.append(f"all = {_fmt(lo)}")
    if not has_data:
        notes.append("no finite values")
    bad = _stat(layer, tensor, "frac_nonfinite")
    if bad > 0 and has_data:
        notes.append(f"{bad:.0%} inf/NaN" if bad >= 0.01 else "some inf/NaN")
    h = result.histograms
    outside = sum(int(_num(np.asarray(h[f"{tensor}_{side}"])[i]))
                  for side in ("underflow", "overflow") if f"{tensor}_{side}" in h)
    if outside > 0:
        notes.append(f"{_compact(outside)} not in any bin")
    return notes


def _zero_spike(layer: dict, tensor: str, edges: np.ndarray, c: np.ndarray):
    """(y limit, note, x of a cut bar or None). The bar holding 0, when mostly exact zeros (ReLU's
    off units and their zero gradients, tanh's saturated units' zero slopes): from ZERO_NOTE of the
    values the note says what fraction is exactly 0 (that bar is not what a histogram of the rest
    would show); when it is over ZERO_CUT times every other bar it is cut, the y limit set by the
    others, so that the shape of the rest stays visible."""
    top = float(c.max())
    b = int(np.searchsorted(edges, 0.0, side="right")) - 1
    if not 0 <= b < c.size or c.size < 2:
        return top * HEADROOM, None, None
    frac = _stat(layer, tensor, "frac_zero")
    if not (frac >= ZERO_NOTE and frac * _stat(layer, tensor, "count") >= 0.5 * c[b]):
        return top * HEADROOM, None, None
    rest = float(np.max(np.delete(c, b)))
    if rest == 0:  # one bar: the panel's other notes ("all = 0") say it
        return top * HEADROOM, None, None
    if not c[b] > ZERO_CUT * rest:
        return top * HEADROOM, f"{frac:.0%} exactly 0", None
    return rest * CUT_HEADROOM, f"{frac:.0%} exactly 0\n(bar cut)", (edges[b] + edges[b + 1]) / 2


def _draw_panel(ax, result, tensor, i, edges, counts, color):
    from matplotlib.transforms import ScaledTranslation

    layer, fig = result.layers[i], ax.get_figure()
    ax.set_title(f"layer {layer.get('layer', i + 1)}", fontsize=9, pad=14)
    mean, std = _stat(layer, tensor, "mean"), _stat(layer, tensor, "std")
    ax.text(0.5, 1.0, f"mean {_fmt(mean)}  std {_fmt(std)}", ha="center", va="bottom", fontsize=7.5,
            color="#444444", transform=ax.transAxes + ScaledTranslation(0, 3 / 72, fig.dpi_scale_trans))
    c = counts[i]
    nz = np.flatnonzero(c)
    if nz.size:
        i0, i1 = nz[0], nz[-1] + 1
        e = np.clip(edges[i, i0:i1 + 1], -HUGE, HUGE)
        # the outline keeps a spike narrower than a pixel visible
        ax.stairs(c[i0:i1], e, fill=True, facecolor=color, edgecolor=color, linewidth=0.8)
        ylim, zeros, cut_at = _zero_spike(layer, tensor, edges[i], c)
        yticks = _linear_ticks(0.0, ylim / (CUT_HEADROOM if cut_at is not None else HEADROOM), 2)
        if cut_at is not None:  # a white gap across the cut bar, above every other bar
            ax.plot([np.clip(cut_at, -HUGE, HUGE)], [1.15 * ylim / CUT_HEADROOM], marker="_", markersize=9,
                    markeredgewidth=2.5, color="white", zorder=4)
    else:
        ylim, zeros, yticks = HEADROOM, None, []
    ax.set_ylim(0, ylim)
    ax.set_yticks(yticks, [_compact(t) for t in yticks])
    notes = _panel_notes(result, tensor, i, bool(nz.size)) + ([zeros] if zeros else [])
    if notes:
        ax.text(0.97, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top",
                fontsize=7.5, fontweight="bold", color="#222222",
                bbox=dict(facecolor="white", alpha=0.85, edgecolor="none", pad=1.0))
    ax.tick_params(labelsize=8, length=3, pad=2)


def histograms_figure(result):
    """One panel per layer: post-activations on the top row, gradients dL/dz on the bottom row.

    A row shares its x axis, so a collapse shows as the histograms narrowing layer after layer and an
    explosion as them widening; tanh's post row spans [-1, 1], where collapse is a spike at 0 and
    saturation two spikes at ±1. With more than ``MAX_PANELS`` layers, evenly spaced layers are shown.
    Bars are counts; each panel has its own count scale. Where many values are exactly 0 (ReLU's off
    units and their zero gradients, tanh's saturated units' zero slopes) the panel says what
    fraction, and a bar of them that dwarfs the rest is cut (a white gap), its y scale set by the
    other bars.
    """
    L = len(result.layers)
    idx = shown_layers(L)
    rows = [(t, h) for t, h in ((t, _hist(result, t)) for t in ROWS) if h is not None]
    ncols = max(len(idx), 1)
    width = max(7.0, LEFT + ncols * PANEL_W + (ncols - 1) * GAP + RIGHT)
    row_h = ROW_TITLE + PANEL_TITLE + PANEL_H + BELOW
    first = f"showing {len(idx)} of {L} layers (evenly spaced, first and last included)" \
        if len(idx) < L else None
    title, top = _title(result, width, first)
    H = top + row_h * max(len(rows), 1) + 0.1
    fig = _new_figure(width, H, title)
    if not rows:
        fig.text(0.5, 0.5, "no histograms in this result", ha="center", va="center")
        return fig
    block_w = ncols * PANEL_W + (ncols - 1) * GAP
    x0 = LEFT + (width - (LEFT + block_w + RIGHT)) / 2  # few panels: centred in the minimum width
    for r, (tensor, (edges, counts)) in enumerate(rows):
        row_title, xlabel = ROWS[tensor]
        row_top = H - top - r * row_h                    # inches from the bottom
        bottom = row_top - ROW_TITLE - PANEL_TITLE - PANEL_H
        fig.text((x0 + block_w / 2) / width, (row_top - 0.05) / H, row_title, ha="center", va="top",
                 fontsize=10, fontweight="bold")
        fig.text((x0 + block_w / 2) / width, (bottom - 0.27) / H, xlabel, ha="center", va="top",
                 fontsize=9)
        fig.text((x0 - LEFT + 0.12) / width, (bottom + PANEL_H / 2) / H, "count", rotation=90, ha="left",
                 va="center", fontsize=9)
        fixed = _fixed_range(result, tensor, edges)
        lo, hi = fixed or _row_limits(result, tensor, edges, counts, idx)
        xticks = [lo, (lo + hi) / 2, hi] if fixed else _linear_ticks(lo, hi, 3)
        first_ax = None
        for k, i in enumerate(idx):
            ax = _place(fig, x0 + k * (PANEL_W + GAP), bottom, PANEL_W, PANEL_H, sharex=first_ax)
            first_ax = first_ax or ax
            _draw_panel(ax, result, tensor, i, edges, counts, COLORS[tensor])
        first_ax.set_xlim(lo, hi)
        first_ax.set_xticks(xticks, _tick_labels(xticks))
    return fig


# -- profile ---------------------------------------------------------------------------------------

def _marker(n: int, dashed: bool = False):
    """Dots on measured lines up to 30 layers; theory (dashed) is a line, or a dash for 1 layer."""
    if dashed:
        return "_" if n == 1 else None
    return "o" if n <= 30 else None


def log_limits(lo: float, hi: float) -> tuple[float, float]:
    """Limits of a log axis that shows lo..hi (positive, finite) with a margin of 5% of its decades,
    inside 1e-300..HUGE (matplotlib's own margins overflow near the float limit)."""
    pad = 10 ** (0.05 * max(math.log10(hi) - math.log10(lo), 0.3))
    return max(lo / pad, 1e-300), min(hi * pad, HUGE)


def _log_lines(ax, x, series) -> bool:
    """Plot ``(label, values, color, dashed)`` on a log axis; True when anything was drawn.

    Values that a log axis cannot show (0, negative, inf, NaN) are left out (NaN in the Line2D),
    marked on the frame (▼ at the bottom for 0 or less, × at the top for inf/NaN) and named in the
    legend ("= 0 at layers 1–10" where they are all exactly 0, as a zero init's std).
    """
    ys = [np.array(values, dtype=float) for _, values, _, _ in series]
    drawn = np.concatenate([y[np.isfinite(y) & (y > 0)] for y in ys]) if ys else np.array([])
    ax.set_yscale("log")
    if drawn.size:
        # limits set before plotting, autoscale off: matplotlib's own margins are powers of 10
        # that overflow (a RuntimeWarning) when the data come near the float limit
        ax.set_ylim(*log_limits(float(drawn.min()), float(drawn.max())))
    else:
        ax.set_ylim(0.1, 10)
        ax.text(0.5, 0.5, "nothing positive and finite to draw on a log axis",
                transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#444444")
    ax.set_autoscaley_on(False)
    edge = ax.get_xaxis_transform()  # x in data, y in axes fraction: markers on the frame
    for (label, _, color, dashed), y in zip(series, ys):
        ok = np.isfinite(y) & (y > 0)
        notes = []
        low = np.isfinite(y) & (y <= 0)
        for what, mask, ypos, mk in (("= 0" if np.all(y[low] == 0) else "≤ 0", low, 0.025, "v"),
                                     ("inf/NaN", ~np.isfinite(y), 0.975, "x")):
            if mask.any():
                notes.append(f"{what} at {layer_ranges([int(k) for k in x[mask]])} "
                             f"{'▼' if mk == 'v' else '×'}")
                ax.plot(x[mask], np.full(mask.sum(), ypos), transform=edge, linestyle="none",
                        marker=mk, markersize=5, color=color, label="_edge")
        if notes:
            label += f" ({', '.join(notes)})"
        marker = _marker(len(x), dashed)
        ax.plot(x, np.where(ok, y, np.nan), color=color, linestyle="--" if dashed else "-", marker=marker,
                markersize=14 if marker == "_" else 3, markeredgewidth=1.5, linewidth=1.5, label=label)
    if drawn.size:
        log_ticks(ax, float(drawn.min()), float(drawn.max()))
    return bool(drawn.size)


def log_ticks(ax, lo: float, hi: float, symlog: bool = False):
    """Readable ticks for a log (or symlog) y axis whose data run from ``lo`` to ``hi`` (> 0).

    Under one decade, plain numbers (0.2, 0.4, ...: matplotlib would label only 10^0 there); up to
    three, 1-2-5 steps (0.02, 0.05, 0.1, ...); over eight, one tick every 2, 5, 10, 20... decades
    at multiples of that stride (matplotlib's own choice starts at the lowest decade: 1e-6, 1e14,
    1e34 ...).
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    if not symlog:
        y0, y1 = map(float, ax.get_ylim())
        decades = math.log10(y1) - math.log10(y0)  # not y1 / y0: that overflows for 1e-300 .. 1e300
        if decades < 1:
            ticks = [t for t in _linear_ticks(y0, y1, 6) if t > 0]
            if len(ticks) >= 2:  # one more step down, so the low end of the data is labelled too
                below = ticks[0] - (ticks[1] - ticks[0])
                ticks = ([below] if below > 0 and below < y0 else []) + ticks
        elif decades < 3:
            steps = [m * 10.0 ** k for k in range(math.floor(math.log10(y0)) - 1, math.ceil(math.log10(y1)))
                     for m in (1, 2, 5)]
            below = [t for t in steps if t < y0 * 0.999]
            ticks = ([below[-1]] if below else []) + [t for t in steps if y0 <= t <= y1]
        else:
            ticks = []
        if len(ticks) >= 2:
            y0 = min(y0, ticks[0] / 1.03)  # the axis reaches the lowest tick
            ax.set_yticks(ticks, _tick_labels(ticks))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_ylim(y0, y1)
            return
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if d1 - d0 <= 8 and not symlog:
        if d1 - d0 > 4:
            ax.yaxis.set_minor_locator(NullLocator())
        return
    stride = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200) if (d1 - d0) / s <= 8)
    decades = np.arange(math.ceil(d0 / stride) * stride, d1 + 1, stride)
    ticks = [10.0 ** d for d in decades]
    if symlog:  # ticks on both sides of 0; 0 itself; 10**0 only when decades are wide apart
        ticks = [t for t in ticks if t > 1 or stride == 1]
        ticks = sorted({0.0, *ticks, *(-t for t in ticks)})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())


def _symlog_end(v: float) -> float:
    """An axis end a little beyond ``v`` on a symlog axis (linear within ±1)."""
    if abs(v) <= 1:
        return v
    return math.copysign(min(abs(v) * 10 ** (0.04 * math.log10(abs(v))), HUGE), v)


PROFILE_W, PROFILE_H = 12.0, 7.6     # inches, without the title
P_LEFT, P_RIGHT, P_BOTTOM, P_WGAP, P_HGAP, P_TITLE = 0.9, 0.25, 0.6, 0.95, 0.5, 0.35


def profile_figure(result):
    """2x2 panels by layer: (a) std of z and a, (b) mean of a, (c) saturated and zero fractions,
    (d) gradient std. Theory predictions (``layer["theory"]``), when present, are dashed lines."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    x = np.array([_num(layer.get("layer", i + 1)) for i, layer in enumerate(result.layers)])
    title, top = _title(result, PROFILE_W)
    W, H = PROFILE_W, PROFILE_H + top
    fig = _new_figure(W, H, title)
    fig.subplots_adjust(left=P_LEFT / W, right=1 - P_RIGHT / W, bottom=P_BOTTOM / H,
                        top=1 - (top + P_TITLE) / H,
                        wspace=P_WGAP / ((W - P_LEFT - P_RIGHT - P_WGAP) / 2),
                        hspace=(P_HGAP + P_TITLE) / ((H - top - P_TITLE - P_BOTTOM - P_HGAP) / 2))
    (ax_std, ax_mean), (ax_frac, ax_grad) = fig.subplots(2, 2, sharex=True)
    many = len(x) > 30

    # (a) spread of z and a
    series = [("pre z: std", _column(result, "pre", "std"), COLORS["pre"], False),
              ("post a: std", _column(result, "post", "std"), COLORS["post"], False)]
    for tensor in ("pre", "post"):
        theory = _theory(result, f"{tensor}_std")
        if theory is not None:
            series.append((f"{tensor}: theory", theory, COLORS[tensor], True))
    _log_lines(ax_std, x, series)
    ax_std.set_title("(a) spread: std of z and of a = φ(z)", fontsize=10)
    ax_std.set_ylabel("std (log scale)")

    # (b) mean of a
    mean = _column(result, "post", "mean")
    bad = ~np.isfinite(mean)
    label = "post a: mean"
    if bad.any():
        label += f" (inf/NaN at {layer_ranges([int(k) for k in x[bad]])}: not drawn)"
    big = float(np.abs(mean[~bad]).max()) if (~bad).any() else 0.0
    if big > 1e3:  # orders of magnitude: symlog, limits set first (see _log_lines)
        ax_mean.set_yscale("symlog", linthresh=1.0)
        ends = [_symlog_end(v) for v in (float(np.min(mean[~bad])), float(np.max(mean[~bad])))]
        ax_mean.set_ylim(min(ends[0], -0.3), max(ends[1], 0.3))
        ax_mean.set_autoscaley_on(False)
        log_ticks(ax_mean, 1.0, big, symlog=True)
        ax_mean.set_ylabel("mean (symlog: linear within ±1)")
    else:
        ax_mean.set_ylabel("mean")
        spread = _column(result, "post", "std")
        spread = spread[np.isfinite(spread)]
        if spread.size and big < 0.1 * float(spread.max()):
            # a mean far below the spread is noise around 0: show it on the scale of the spread,
            # not magnified into a dramatic-looking trend
            half = 0.1 * float(spread.max())
            ax_mean.set_ylim(-half, half)
    ax_mean.axhline(0.0, color="#999999", linewidth=0.8)
    ax_mean.plot(x, np.where(bad, np.nan, mean), color=COLORS["post"], label=label,
                 marker=_marker(len(x)), markersize=3)
    theory = _theory(result, "post_mean")
    if theory is not None:
        ok = np.isfinite(theory) & (np.abs(theory) <= HUGE)
        ax_mean.plot(x, np.where(ok, theory, np.nan), color=COLORS["post"], linestyle="--",
                     marker=_marker(len(x), True), markersize=14, markeredgewidth=1.5, label="post a: theory")
    ax_mean.set_title("(b) mean of a = φ(z)", fontsize=10)

    # (c) fractions of a: saturated, exactly zero, dead units, non-finite
    fractions = [("saturated (φ' < 2% of its max)", "frac_saturated", COLORS["saturated"], "-", "s"),
                 ("exactly 0", "frac_zero", COLORS["zero"], "-", "o"),
                 ("dead units (0 for every sample)", "frac_dead_units", COLORS["dead"], ":", "^"),
                 ("inf/NaN", "frac_nonfinite", COLORS["nonfinite"], "--", "x")]
    for label, key, color, style, mk in fractions:
        y = _column(result, "post", key)
        if np.isnan(y).all() or (key in ("frac_dead_units", "frac_nonfinite") and not np.nanmax(y) > 0):
            continue  # absent, or an extra line that is 0 everywhere and would only add clutter
        ax_frac.plot(x, y, color=color, linestyle=style, marker=None if many else mk, markersize=4,
                     label=label)
    ax_frac.set_ylim(-0.04, 1.04)
    ax_frac.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax_frac.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_frac.set_ylabel("fraction of a")
    ax_frac.set_title("(c) saturated and zero outputs", fontsize=10)

    # (d) gradients
    if "grad_pre" in result.tensors:
        series = [("dL/dz: std", _column(result, "grad_pre", "std"), COLORS["grad_pre"], False),
                  ("dL/dW: std", _column(result, "grad_weight", "std"), COLORS["grad_weight"], False)]
        theory = _theory(result, "grad_pre_std")
        if theory is not None:
            series.append(("dL/dz: theory", theory, COLORS["grad_pre"], True))
        _log_lines(ax_grad, x, series)
        ax_grad.set_ylabel("std (log scale)")
    else:
        ax_grad.text(0.5, 0.5, "no gradients recorded (run without the backward pass)",
                     transform=ax_grad.transAxes, ha="center", va="center", fontsize=9)
        ax_grad.set_yticks([])
    ax_grad.set_title("(d) gradient std: dL/dz and dL/dW", fontsize=10)

    for ax in (ax_std, ax_mean, ax_frac, ax_grad):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
    for ax in (ax_frac, ax_grad):
        ax.set_xlabel("layer")
    if len(x) <= 15:
        ax_frac.set_xticks(x)
    else:
        ax_frac.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    if len(x):
        ax_frac.set_xlim(np.nanmin(x) - 0.5, np.nanmax(x) + 0.5)
    return fig


# -- files -----------------------------------------------------------------------------------------

def run_figure_bytes(result) -> dict[str, bytes]:
    """``{"histograms.png": ..., "profile.png": ...}``: a run's figures as PNG bytes, rendered in
    memory (a sweep's worker process renders, the parent writes). Each figure is cleared as soon as
    it is rendered, so many runs in one process do not pile up figures."""
    return {name: figure_png(make(result))
            for name, make in (("histograms.png", histograms_figure), ("profile.png", profile_figure))}


def figure_png(fig) -> bytes:
    """The figure as PNG bytes. (Not followed by fig.clear(): that rebuilt every axis's ticks only
    to throw them away, a third of the time of a 20-panel figure; the garbage collector frees it.)"""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_run_figures(result, folder) -> list[Path]:
    """Write ``histograms.png`` and ``profile.png`` into ``folder``; returns their paths.

    Each PNG is written to a temporary name in ``folder`` and renamed into place (os.replace), so a
    reader never sees half a file.
    """
    from .results import write_atomic

    written = []
    for name, data in run_figure_bytes(result).items():
        path = Path(folder) / name
        write_atomic(path, data)
        written.append(path)
    return written


# -- the phase diagram of `actstats theory` -----------------------------------------------------------

def named_points(act: str, width: int = 500, bias_init: str = "zeros") -> list[tuple[str, float, float]]:
    """(label, sigma_w^2, sigma_b^2) of the classic inits (theory.classic_inits) on a square net of
    ``width`` units; those the theory makes no prediction for are left out."""
    from . import theory

    rows = (theory.init_summary(act, name, bias_init, width) for name in theory.classic_inits(act))
    return [(r["init"], r["sigma_w2"], r["sigma_b2"]) for r in rows if "reason" not in r]


def phase_diagram_figure(act: str, width: int = 500, highlight=None, w_max: float = 4.0,
                         b_max: float = 0.5, n: int = 61, bias_init: str = "zeros", unmarked=None):
    """chi_1 over (sigma_w^2, sigma_b^2) as colour, the critical line chi_1 = 1, and the named inits
    (Poole et al. 2016 Fig. 1; Schoenholz et al. 2017 Fig. 1). ``highlight`` = (label, sw2, sb2);
    ``unmarked`` = (label, reason) of a chosen init the theory cannot place, said under the title."""
    import textwrap

    from matplotlib.colors import TwoSlopeNorm

    from . import theory

    sw2 = np.linspace(w_max / (n - 1), w_max, n)
    sb2 = np.linspace(0.0, b_max, (n + 1) // 2)
    grid = theory.phase_diagram(act, sw2, sb2)
    chi = np.log10(np.clip(grid["chi_1"], 1e-3, 1e3))
    fig = _new_figure(8.5, 6.0, f"Mean-field phase diagram of {act}: χ₁ = σ_w² E[φ'(z)²] at the fixed point q*")
    ax = fig.add_axes([0.09, 0.10, 0.72, 0.76])
    cax = fig.add_axes([0.84, 0.10, 0.025, 0.76])
    lim = max(0.3, float(np.nanmax(np.abs(chi))))
    mesh = ax.pcolormesh(sw2, sb2, chi, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim), shading="nearest")
    bar = fig.colorbar(mesh, cax=cax)
    bar.set_label("log₁₀ χ₁   (< 0 ordered: gradients vanish · > 0 chaotic: they explode)")
    if np.nanmin(chi) < 0 < np.nanmax(chi):
        ax.contour(sw2, sb2, chi, levels=[0.0], colors="k", linewidths=2)
        ax.plot([], [], "k-", lw=2, label="critical line χ₁ = 1")
    merged: dict = {}  # points that coincide (ReLU's He is its critical point) share one label
    for label, x, y in named_points(act, width, bias_init):
        key = (round(x, 9), round(y, 9))
        merged[key] = f"{merged[key]} = {label}" if key in merged else label
    if highlight:  # the chosen init is named once, by the star, with the named inits it lies on
        label, x, y = highlight
        same = [n for n in merged.pop((round(x, 9), round(y, 9)), "").split(" = ") if n and n != label]
        highlight = (" = ".join([label, *same]), x, y)
    marks = [(label, x, y) for (x, y), label in sorted(merged.items())]
    marks += [highlight] if highlight else []
    for i, (label, x, y) in enumerate(marks):
        star = highlight is not None and i == len(marks) - 1
        style = dict(marker="*" if star else "o", ms=14 if star else 7, mec="k",
                     mfc="gold" if star else "white", zorder=5, clip_on=False)  # whole on the axis line
        if x <= w_max and y <= b_max:
            ax.plot([x], [y], ls="none", **style)
            low = y < 0.25 * b_max  # the star's label goes above the staggered labels of the axis row
            offset = ((10, 66) if low else (10, -18)) if star else (6, 10 + 18 * (i % 3))
            ax.annotate(label, (x, y), xytext=offset, textcoords="offset points", fontsize=8, zorder=6,
                        fontweight="bold" if star else "normal",
                        arrowprops=dict(arrowstyle="-", lw=0.6, color="0.2", shrinkA=0, shrinkB=4),
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.8, lw=0))
        else:  # off the chart: an arrow at the right edge saying where it is
            ax.annotate(f"{label}: σ_w² = {x:.3g} →", (w_max, min(y, b_max)), xytext=(-4, 14 + 12 * (i % 3)),
                        textcoords="offset points", ha="right", fontsize=8, zorder=6,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    ax.set_xlim(0, w_max)
    ax.set_ylim(0, b_max)
    ax.set_xlabel("σ_w² = fan_in · Var[W]")
    ax.set_ylabel("σ_b² = Var[b]")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    title = f"named inits on a square net of width {width}"
    if unmarked:
        title += "\n" + textwrap.fill(f"{unmarked[0]} is not marked: no prediction, {unmarked[1]}", 100)
    ax.set_title(title, fontsize=9)
    return fig
