"""Figures: the right panels, the plotted numbers equal the result's, awkward data draws cleanly.

Small nets (width 50, batch 100) keep this fast; each figure is built once per module. Numbers read
back from the artists (Line2D y-data, StepPatch heights) are compared with the RunResult itself.
"""

from __future__ import annotations

import copy
import gc
import io
import struct
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest

import actstats
from actstats import plots
from actstats.diagnosis import layer_ranges, spans

SMALL = dict(width=50, batch=100)


def run(**cfg):
    return actstats.run_experiment({**SMALL, **cfg})


@pytest.fixture(scope="module")
def collapse():
    return run(init="normal:std=0.01", act="tanh")


@pytest.fixture(scope="module")
def collapse_figs(collapse):
    return plots.histograms_figure(collapse), plots.profile_figure(collapse)


@pytest.fixture(scope="module")
def zeros():
    return run(init="zeros", act="tanh")


@pytest.fixture(scope="module")
def exploding():
    return run(init="ones", act="relu", layers=60)  # std 1e100 at layer 60 (width 50)


def render(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def line(ax, label_start):
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def trimmed(counts, edges):
    nz = np.flatnonzero(counts)
    return counts[nz[0]:nz[-1] + 1], edges[nz[0]:nz[-1] + 2]


# -- layer selection ------------------------------------------------------------------------------

def test_shown_layers_all_when_few():
    assert plots.shown_layers(1) == [0]
    assert plots.shown_layers(10) == list(range(10))


@pytest.mark.parametrize("n", [11, 30, 60, 1000])
def test_shown_layers_evenly_spaced_with_first_and_last(n):
    idx = plots.shown_layers(n)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == n - 1
    gaps = np.diff(idx)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1


def test_spans():
    assert spans([1, 2, 3, 7, 9, 10]) == "1–3, 7, 9–10"
    assert spans([4]) == "4"
    assert (layer_ranges([4]), layer_ranges([1, 2])) == ("layer 4", "layers 1–2")


# -- histograms -----------------------------------------------------------------------------------

def test_histograms_panels_and_titles(collapse, collapse_figs):
    fig, _ = collapse_figs
    assert len(fig.axes) == 20  # 10 layers x (post, grad_pre)
    assert [ax.get_title() for ax in fig.axes] == [f"layer {k}" for k in range(1, 11)] * 2
    texts = [t.get_text() for t in fig.texts]
    assert "post-activation a = φ(z)" in texts
    assert any(t.startswith("gradient dL/dz") for t in texts)
    assert texts.count("count") == 2
    title = fig.get_suptitle()
    verdict = next(f["text"] for f in collapse.diagnosis["findings"] if f["code"] == "collapse")
    assert collapse.diagnosis["verdict"] == "collapse"
    assert verdict in title.replace("\n", " ")
    assert "tanh" in title and "normal:std=0.01" in title and "10 layers × 50 units" in title
    assert "batch 100" in title


def test_histogram_panel_shows_mean_and_std(collapse, collapse_figs):
    fig, _ = collapse_figs
    ax = fig.axes[0]
    post = collapse.layers[0]["post"]
    stats = [t.get_text() for t in ax.texts]
    assert f"mean {plots._fmt(post['mean'])}  std {plots._fmt(post['std'])}" in stats


def test_histogram_bar_heights_equal_counts(collapse, collapse_figs):
    from matplotlib.patches import StepPatch

    fig, _ = collapse_figs
    h = collapse.histograms
    for row, tensor in enumerate(("post", "grad_pre")):
        for i, ax in enumerate(fig.axes[row * 10:(row + 1) * 10]):
            steps = [p for p in ax.patches if isinstance(p, StepPatch)]
            assert len(steps) == 1
            values, edges, _ = steps[0].get_data()
            want_counts, want_edges = trimmed(h[f"{tensor}_counts"][i], h[f"{tensor}_edges"][i])
            np.testing.assert_array_equal(values, want_counts)
            np.testing.assert_array_equal(edges, want_edges)
            assert values.sum() == h[f"{tensor}_counts"][i].sum()


def test_rows_share_x_and_tanh_post_spans_minus_one_to_one(collapse, collapse_figs):
    fig, _ = collapse_figs
    top, bottom = fig.axes[:10], fig.axes[10:]
    assert {ax.get_xlim() for ax in top} == {(-1.0, 1.0)}
    assert len({ax.get_xlim() for ax in bottom}) == 1
    lo, hi = bottom[0].get_xlim()
    g = collapse.layers
    assert lo <= min(layer["grad_pre"]["min"] for layer in g)
    assert hi >= max(layer["grad_pre"]["max"] for layer in g)


def test_histograms_of_deep_net_show_ten_layers():
    result = run(init="he", act="relu", layers=30)
    fig = plots.histograms_figure(result)
    want = [f"layer {i + 1}" for i in plots.shown_layers(30)]
    assert [ax.get_title() for ax in fig.axes] == want * 2
    assert "showing 10 of 30 layers" in fig.get_suptitle()
    # panels show the layers they say: heights equal that layer's counts
    values = fig.axes[3].patches[0].get_data()[0]
    k = plots.shown_layers(30)[3]
    np.testing.assert_array_equal(values, trimmed(result.histograms["post_counts"][k],
                                                  result.histograms["post_edges"][k])[0])


def test_relu_zero_bar_is_cut_so_the_rest_shows():
    # ReLU: half of a and of dL/dz are exactly 0, one bar several times any other; the y axis is
    # scaled to the other bars (plus room for the break) and the panel says how many are 0 and that
    # the bar is cut. tanh's post has no zeros: its tallest bar sets the scale, and no note.
    result = run(init="he", act="relu", layers=3)
    fig = plots.histograms_figure(result)
    for ax, (tensor, l) in zip(fig.axes, [("post", l) for l in range(3)] + [("grad_pre", l) for l in range(3)]):
        counts, edges = result.histograms[f"{tensor}_counts"][l], result.histograms[f"{tensor}_edges"][l]
        b = int(np.searchsorted(edges, 0.0, side="right")) - 1
        rest = np.delete(counts, b).max()
        assert counts[b] > 3 * rest  # the premise: a spike of zeros
        assert ax.get_ylim()[1] == pytest.approx(rest * plots.CUT_HEADROOM)
        frac = result.layers[l][tensor]["frac_zero"]
        assert f"{frac:.0%} exactly 0\n(bar cut)" in [t.get_text() for t in ax.texts]
    tanh = run(init="xavier", act="tanh", layers=3, backward=False)
    fig = plots.histograms_figure(tanh)
    for ax, counts in zip(fig.axes, tanh.histograms["post_counts"]):
        assert ax.get_ylim()[1] == pytest.approx(counts.max() * plots.HEADROOM)
        assert not any("exactly 0" in t.get_text() for t in ax.texts)


def test_exact_zeros_are_named_even_when_their_bar_is_not_cut():
    # tanh with N(0, 1) weights: about 40% of dL/dz are exactly 0 (a rounds to +-1, so 1 - a^2 is
    # 0), sharing a bin with small gradients on a grid widened by the exploding tail: the panel must
    # say so (a fresh-eyes reader saw a skew that was not there), without cutting a bar that is not
    # over 3 times the others
    result = run(init="normal:std=1", act="tanh", layers=3, width=500, batch=200)
    fig = plots.histograms_figure(result)
    for ax, l in zip(fig.axes[3:], range(3)):
        frac = result.layers[l]["grad_pre"]["frac_zero"]
        assert frac > 0.3
        counts = result.histograms["grad_pre_counts"][l]
        texts = [t.get_text() for t in ax.texts]
        if ax.get_ylim()[1] == pytest.approx(counts.max() * plots.HEADROOM):
            assert f"{frac:.0%} exactly 0" in texts
        else:
            assert f"{frac:.0%} exactly 0\n(bar cut)" in texts


def test_forward_only_has_post_row_only():
    result = run(init="xavier", act="sigmoid", backward=False)
    fig = plots.histograms_figure(result)
    assert len(fig.axes) == 10
    assert not any(t.get_text().startswith("gradient") for t in fig.texts)
    prof = plots.profile_figure(result)
    assert any("no gradients" in t.get_text() for t in prof.axes[3].texts)
    assert prof.axes[0].get_xlim() == (0.5, 10.5)
    assert {ax.get_xlim() for ax in fig.axes} == {(0.0, 1.0)}  # sigmoid's fixed range


# -- profile --------------------------------------------------------------------------------------

def test_profile_panels(collapse, collapse_figs):
    _, fig = collapse_figs
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)"]
    a, b, c, d = fig.axes
    assert a.get_yscale() == "log" and d.get_yscale() == "log"
    assert b.get_yscale() == "linear"
    assert c.get_ylim() == (-0.04, 1.04)
    assert c.get_xlabel() == d.get_xlabel() == "layer"
    assert all(ax.get_ylabel() for ax in fig.axes)
    assert collapse.diagnosis["findings"][0]["text"] in fig.get_suptitle().replace("\n", " ")


def test_profile_lines_equal_result_numbers(collapse, collapse_figs):
    _, fig = collapse_figs
    a, b, c, d = fig.axes
    layers = np.arange(1, 11)
    for ax, label, tensor, key in ((a, "pre z: std", "pre", "std"), (a, "post a: std", "post", "std"),
                                   (b, "post a: mean", "post", "mean"),
                                   (c, "saturated", "post", "frac_saturated"),
                                   (c, "exactly 0", "post", "frac_zero"),
                                   (d, "dL/dz: std", "grad_pre", "std"),
                                   (d, "dL/dW: std", "grad_weight", "std")):
        ln = line(ax, label)
        np.testing.assert_array_equal(ln.get_xdata(), layers)
        np.testing.assert_array_equal(ln.get_ydata(), collapse.column(tensor, key))


def test_profile_theory_is_dashed_in_the_same_colour(collapse):
    result = copy.deepcopy(collapse)
    keys = ("pre_std", "post_std", "grad_pre_std", "post_mean")
    theory = np.random.default_rng(0).uniform(0.1, 1.0, (10, len(keys)))
    for layer, row in zip(result.layers, theory):
        layer["theory"] = dict(zip(keys, row))
    result.layers[4]["theory"] = None                    # absent for one layer
    del result.layers[5]["theory"]["grad_pre_std"]       # one key missing
    result.layers[6]["theory"]["post_std"] = None        # one value missing
    fig = plots.profile_figure(result)
    a, b, _, d = fig.axes
    for ax, label, measured, col in ((a, "pre: theory", "pre z: std", 0),
                                     (a, "post: theory", "post a: std", 1),
                                     (d, "dL/dz: theory", "dL/dz: std", 2),
                                     (b, "post a: theory", "post a: mean", 3)):
        ln = line(ax, label)
        assert ln.get_linestyle() == "--"
        assert ln.get_color() == line(ax, measured).get_color()
        want = theory[:, col].copy()
        want[4] = np.nan
        if col == 2:
            want[5] = np.nan
        if col == 1:
            want[6] = np.nan
        np.testing.assert_array_equal(ln.get_ydata(), want)


def test_one_layer_theory_is_a_visible_dash_at_the_prediction():
    # one point makes no dashed line: each prediction is drawn as a dash (a fresh-eyes pass found the
    # legend naming theory lines that did not show, their dash 3 points wide behind the dot)
    result = run(init="lecun", act="sigmoid", layers=1)
    fig = plots.profile_figure(result)
    a, b, _, d = fig.axes
    for ax, label, key in ((a, "pre: theory", "pre_std"), (a, "post: theory", "post_std"),
                           (b, "post a: theory", "post_mean"), (d, "dL/dz: theory", "grad_pre_std")):
        ln = line(ax, label)
        assert ln.get_marker() == "_" and ln.get_markersize() >= 12, label
        assert ln.get_ydata()[0] == result.layers[0]["theory"][key]


def test_profile_without_theory_has_no_dashed_lines(collapse):
    result = copy.deepcopy(collapse)
    for layer in result.layers:
        layer.pop("theory", None)
    fig = plots.profile_figure(result)
    assert not any(ln.get_linestyle() == "--" for ax in fig.axes for ln in ax.get_lines())
    assert not any("theory" in ln.get_label() for ax in fig.axes for ln in ax.get_lines())


def test_log_axis_masks_what_it_cannot_show(collapse):
    result = copy.deepcopy(collapse)
    weird = {0: 0.0, 1: np.nan, 2: np.inf, 3: 1e100, 4: -1.0}
    for i, value in weird.items():
        result.layers[i]["post"]["std"] = value
    fig = plots.profile_figure(result)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render(fig)
    ln = line(fig.axes[0], "post a: std")
    y = ln.get_ydata()
    want = np.array(result.column("post", "std"), dtype=float)
    assert np.isnan(y[[0, 1, 2, 4]]).all()
    np.testing.assert_array_equal(y[3:4], [1e100])
    np.testing.assert_array_equal(y[5:], want[5:])
    assert "≤ 0 at layers 1, 5 ▼" in ln.get_label() and "inf/NaN at layers 2–3 ×" in ln.get_label()
    # the left-out layers are marked on the frame
    marks = [m for m in fig.axes[0].get_lines() if m.get_label() == "_edge"]
    assert sorted(x for m in marks for x in m.get_xdata()) == [1, 2, 3, 5]


def test_huge_mean_uses_symlog(exploding):
    fig = plots.profile_figure(exploding)
    assert fig.axes[1].get_yscale() == "symlog"


# -- awkward data ---------------------------------------------------------------------------------

def test_zero_init_draws_without_warnings(zeros):
    assert zeros.diagnosis["verdict"] == "symmetric"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist, prof = plots.histograms_figure(zeros), plots.profile_figure(zeros)
        render(hist), render(prof)
    # every post panel is one visible bar at 0, said in words
    for ax in hist.axes[:10]:
        values, edges, _ = ax.patches[0].get_data()
        assert len(values) == 1 and values[0] == 50 * 100 and edges[0] == 0.0
        assert "all = 0" in [t.get_text() for t in ax.texts]
    ln = line(prof.axes[0], "post a: std")
    assert np.isnan(ln.get_ydata()).all() and "= 0 at layers 1–10 ▼" in ln.get_label()  # a std cannot be negative: it is 0
    assert any("nothing positive" in t.get_text() for t in prof.axes[0].texts)


@pytest.mark.parametrize("layers", [60, 200])
def test_exploding_run_draws_without_warnings(exploding, layers):
    result = exploding if layers == 60 else run(init="ones", act="relu", layers=layers)
    std = np.array(result.column("post", "std"), dtype=float)
    if layers == 60:
        assert std[-1] > 1e90  # huge but finite
    else:  # values overflow to inf; the finite values left are the ReLU zeros, so std is 0
        assert result.diagnosis["verdict"] == "nonfinite"
        nonfinite = np.array(result.column("post", "frac_nonfinite"), dtype=float)
        assert nonfinite[-1] > 0 and std[-1] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist, prof = plots.histograms_figure(result), plots.profile_figure(result)
        render(hist), render(prof)
    assert all(np.isfinite(ax.get_xlim()).all() for ax in hist.axes)
    ln = line(prof.axes[0], "post a: std")
    ok = np.isfinite(std) & (std > 0)
    np.testing.assert_array_equal(ln.get_ydata()[ok], std[ok])
    assert np.isnan(ln.get_ydata()[~ok]).all()
    if not ok.all():  # the layers left off the log axis are named: std 0 where only ReLU zeros are finite
        zero = [int(k) for k in np.flatnonzero(std == 0) + 1]
        assert f"= 0 at {layer_ranges(zero)}" in ln.get_label()
    if layers == 200:
        frac = line(prof.axes[2], "inf/NaN")
        np.testing.assert_array_equal(frac.get_ydata(), result.column("post", "frac_nonfinite"))


def test_layer_without_finite_values(collapse):
    result = copy.deepcopy(collapse)
    result.histograms = {k: v.copy() for k, v in result.histograms.items()}
    result.histograms["post_counts"][9] = 0
    result.layers[9]["post"].update(mean=np.nan, std=np.nan, min=np.nan, max=np.nan, frac_nonfinite=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.histograms_figure(result)
        render(fig)
    ax = fig.axes[9]
    assert not ax.patches
    assert "no finite values" in [t.get_text() for t in ax.texts]


# -- files ----------------------------------------------------------------------------------------

def test_save_run_figures_writes_pngs_and_frees_figures(collapse, tmp_path, monkeypatch):
    made = []
    for name in ("histograms_figure", "profile_figure"):
        def wrapper(result, _original=getattr(plots, name)):
            fig = _original(result)
            made.append((weakref.ref(fig), tuple(fig.get_size_inches() * fig.dpi)))
            return fig

        monkeypatch.setattr(plots, name, wrapper)
    (tmp_path / "profile.png").write_bytes(b"old")  # replaced, not appended to
    paths = plots.save_run_figures(collapse, tmp_path)
    assert paths == [tmp_path / "histograms.png", tmp_path / "profile.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["histograms.png", "profile.png"]  # no temp files
    for path, (_, size) in zip(paths, made):
        data = path.read_bytes()
        assert png_size(data) == tuple(round(s) for s in size)
        assert 1000 <= size[0] <= 2500 and 250 <= size[1] <= 1200
        assert len(data) > 20_000
    gc.collect()
    assert len(made) == 2 and all(ref() is None for ref, _ in made)  # nothing holds on to them


def test_importing_plots_does_not_import_matplotlib():
    code = "import sys, actstats.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_phase_diagram_colours_are_log_chi_and_marks_sit_on_their_inits():
    from actstats import theory

    fig = plots.phase_diagram_figure("tanh", width=500, highlight=("mine", 1.5, 0.05), n=11)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    sw2 = np.linspace(0.4, 4.0, 11)
    sb2 = np.linspace(0.0, 0.5, 6)
    expected = np.log10(np.clip(theory.phase_diagram("tanh", sw2, sb2)["chi_1"], 1e-3, 1e3))
    assert np.allclose(np.asarray(mesh.get_array()).reshape(expected.shape), expected)
    points = {(round(float(line.get_xdata()[0]), 6), round(float(line.get_ydata()[0]), 6))
              for line in ax.lines if len(line.get_xdata()) == 1}
    # Xavier/LeCun at sigma_w^2 = 1, He at 2, the tanh Kaiming gain at 25/9, and the highlight
    assert {(1.0, 0.0), (2.0, 0.0), (round(25 / 9, 6), 0.0), (1.5, 0.05)} <= points
    # N(0, 1) on a 500-wide net (sigma_w^2 = 500) is off the chart and says so
    assert any("σ_w² = 500 →" in t.get_text() for t in ax.texts)


def test_phase_diagram_names_the_chosen_init_once_with_the_inits_it_lies_on():
    # ReLU: He, critical:q_star=1 and LSUV all sit at (2, 0); choosing he gives one star and one label
    fig = plots.phase_diagram_figure("relu", width=500, highlight=("he", 2.0, 0.0), n=11)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert [s for s in labels if "he" in s.split(" = ")] == ["he = critical:q_star=1 = lsuv"]
    at_he = [line.get_marker() for line in ax.lines
             if len(line.get_xdata()) == 1 and (line.get_xdata()[0], line.get_ydata()[0]) == (2.0, 0.0)]
    assert at_he == ["*"]
    assert ax.get_title() == "named inits on a square net of width 500"


def test_phase_diagram_says_why_a_chosen_init_is_not_marked():
    fig = plots.phase_diagram_figure("tanh", width=500, unmarked=("ones", "a reason."), n=11)
    ax = fig.axes[0]
    assert ax.get_title() == "named inits on a square net of width 500\nones is not marked: no prediction, a reason."
    assert not [line for line in ax.lines if line.get_marker() == "*"]
