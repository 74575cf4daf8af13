"""Diagnosis and table wording on hand-made layer statistics (no network needed): the layers named
in each finding come from the numbers given, so a wrong index or range shows."""

import math

import numpy as np
import pytest
from rich.console import Console

from actstats import RunConfig, run_experiment
from actstats.diagnosis import diagnose, layer_ranges
from actstats.inits import label
from actstats.network import input_rows
from actstats.render import layer_table, num


def stat(std=1.0, nonfinite=0.0, zero=0.0, symmetric=False):
    return {"mean": 0.0, "std": std, "frac_nonfinite": nonfinite, "frac_zero": zero,
            "frac_saturated": 0.0, "symmetric": symmetric}


def layer(post_std=1.0, grad_std=1.0, grad_nonfinite=0.0, weight_nonfinite=0.0, post_nonfinite=0.0):
    return {"pre": stat(post_std, post_nonfinite), "post": stat(post_std, post_nonfinite),
            "grad_pre": stat(grad_std, grad_nonfinite), "grad_weight": stat(grad_std, weight_nonfinite)}


def test_layer_ranges():
    assert layer_ranges([1, 2, 3, 7, 9, 10]) == "layers 1–3, 7, 9–10"
    assert layer_ranges([4]) == "layer 4"


def test_nonfinite_gradients_are_located_where_they_are():
    # dL/dz overflows toward the input (layers 1-2); dL/dW also at the top, from inf activations
    layers = [layer(grad_nonfinite=0.5 if l <= 2 else 0.0, weight_nonfinite=0.5 if l in (1, 2, 6) else 0.0,
                    post_nonfinite=0.5 if l == 6 else 0.0) for l in range(1, 7)]
    found = {f["code"]: f for f in diagnose(layers, saturates=False, act_kind="relu")["findings"]}
    assert found["nonfinite"]["layer"] == 6
    assert found["grad_nonfinite"]["layer"] == 2
    assert found["grad_nonfinite"]["text"] == ("gradients stop being finite at layer 2 going back from the "
                                              "output (dL/dz not finite at layers 1–2); "
                                              "dL/dW not finite at layers 1–2, 6")


def test_zero_gradients_name_every_zero_layer():
    layers = [layer(post_std=0.0, grad_std=0.0 if l < 4 else 0.5) for l in range(1, 5)]
    found = {f["code"]: f for f in diagnose(layers, saturates=False, act_kind="tanh")["findings"]}
    assert found["grad_vanish"]["text"] == "gradients vanish: exactly 0 at layers 1–3 (std 0.5 at layer 4)"


def test_symmetric_layers_are_listed_as_ranges():
    layers = [layer() for _ in range(5)]
    for l in (0, 1, 2, 4):
        layers[l]["post"]["symmetric"] = True
    text = diagnose(layers, saturates=False, act_kind="tanh")["findings"][0]["text"]
    assert "(layers 1–3, 5)" in text


def test_label_spells_out_default_parameters_of_plain_distributions():
    assert label("normal:std=1") == "normal:mean=0,std=1"
    assert label("normal:std=0.01") == "normal:std=0.01"
    assert label("xavier") == "xavier"


def test_table_shows_z_std_and_an_inf_column_only_when_needed():
    def text(result):
        console = Console(width=200, record=True)
        console.print(layer_table(result))
        return console.export_text()

    healthy = run_experiment(RunConfig(init="normal:std=1", act="tanh", layers=2, width=100, batch=50))
    out = text(healthy)
    assert "init normal:mean=0,std=1 · 2 layers × 100" in out and "z std" in out and "inf/NaN" not in out
    z1 = healthy.layers[0]["pre"]["std"]
    assert f"{z1:.3g}" in out.splitlines()[4]  # the first data row shows layer 1's z std
    boom = run_experiment(RunConfig(init="ones", act="relu", layers=200, width=50, batch=20, bins=10))
    out = text(boom)
    assert "inf/NaN" in out and "grad inf" in out and "over the finite values" in out
    # with the inf columns the table drops its vertical rules (to fit 80 columns): cells by whitespace
    first = [line for line in out.splitlines() if line.split()[:1] == ["1"]][0]
    assert first.split()[-1] == f"{100 * boom.layers[0]['grad_pre']['frac_nonfinite']:.1f}%"
    # all-ones weights: a sample grows to inf when its input sum is positive and is 0 after the first
    # ReLU otherwise, so the last layer's inf fraction is that of positive input sums
    x = input_rows(boom.config, 20)
    expected = float(np.mean(x.sum(axis=1) > 0))
    assert math.isclose(boom.layers[-1]["post"]["frac_nonfinite"], expected)
    assert f"{100 * expected:.1f}%" in [line for line in out.splitlines() if line.split()[:1] == ["200"]][0].split()


def test_the_layer_table_fits_80_columns_even_with_its_inf_columns():
    # found by a fresh-eyes pass: at 80 columns (rich's width when piped) numbers were cut to "6.73e…"
    boom = run_experiment(RunConfig(init="ones", act="relu", layers=200, width=50, batch=20, bins=10))
    console = Console(width=80, record=True)
    console.print(layer_table(boom))
    lines = console.export_text().splitlines()
    assert "…" not in "\n".join(lines) and "inf/NaN" in lines[1] and "grad inf" in lines[1]
    assert max(len(line.rstrip()) for line in lines) <= 80
    row = [line for line in lines if line.split()[:1] == ["100"]][0].split()
    # all-ones weights: every unit of a sample is the same positive sum, x50 (the width) per layer
    assert row[1] == num(boom.layers[99]["pre"]["std"]) == num(boom.layers[3]["pre"]["std"] * 50.0**96)
    assert len(row[1]) == 8  # a three-digit exponent, whole


def test_constant_inits_are_symmetric_at_every_layer_whatever_the_rounding():
    """Columns of a constant W sum in different orders (BLAS blocking): float32 rounding differs by
    ~n eps between units, and in float64 sums of squares of 1e153 overflow the fast check. Every
    layer is still symmetric (found by a fresh-eyes pass: layers 57-58 of ones/ReLU were not)."""
    small = run_experiment(RunConfig(init="constant:value=0.001", act="relu", layers=10, dtype="float32"))
    assert [layer["post"]["symmetric"] for layer in small.layers] == [True] * 10
    assert small.diagnosis["verdict"] == "symmetric"
    big = run_experiment(RunConfig(init="ones", act="relu", layers=60, batch=200))
    assert [layer["post"]["symmetric"] for layer in big.layers] == [True] * 60


# --- the verdict judges both passes, on real runs -------------------------------------------------------

SMALL = dict(layers=10, width=100, batch=200)


def _cut(x):
    return f"{x:.3g}"


def forward_trend(word, r):
    s, L = r.column("post", "std"), len(r.layers)
    return (f"activations {word}: std ×{(s[-1] / s[0]) ** (1 / (L - 1)):.2f} per layer "
            f"({_cut(s[0])} at layer 1 → {_cut(s[-1])} at layer {L})")


def forward_healthy(r):
    s, L = r.column("post", "std"), len(r.layers)
    return f"activations healthy: post std stays between {_cut(min(s))} and {_cut(max(s))} over layers 1–{L}"


def gradient_trend(word, r):
    g, L = r.column("grad_pre", "std"), len(r.layers)
    return (f"gradients {word}: grad std ×{(g[0] / g[-1]) ** (1 / (L - 1)):.2f} per layer toward the input "
            f"({_cut(g[-1])} at layer {L} → {_cut(g[0])} at layer 1)")


def saturated(r):
    sat, L = r.column("post", "frac_saturated"), len(r.layers)
    return (f"activations saturate: {sum(sat) / L:.0%} of units saturated on average "
            f"({sat[-1]:.0%} at layer {L}); φ' is near 0 there")


# (run options, verdict, forward, backward, the first two findings' texts from the run's own numbers)
CASES = {
    "tanh N(0, 0.01²)": (dict(init="normal:std=0.01", act="tanh"), "collapse", "collapse", "grad_vanish",
                         lambda r: [forward_trend("collapse toward 0", r), gradient_trend("vanish", r)]),
    "tanh N(0, 1)": (dict(init="normal:std=1", act="tanh"), "saturates", "saturates", "grad_explode",
                     lambda r: [saturated(r), gradient_trend("explode", r)]),
    "tanh xavier": (dict(init="xavier", act="tanh"), "healthy", "healthy", "grad_healthy",
                    lambda r: [forward_healthy(r), gradient_trend("healthy", r)]),
    "sigmoid xavier": (dict(init="xavier", act="sigmoid"), "grad_vanish", "healthy", "grad_vanish",
                       lambda r: [gradient_trend("vanish", r), forward_healthy(r)]),
    "relu xavier": (dict(init="xavier", act="relu"), "collapse", "collapse", "grad_vanish",
                    lambda r: [forward_trend("collapse toward 0", r), gradient_trend("vanish", r)]),
    "relu he": (dict(init="he", act="relu"), "healthy", "healthy", "grad_healthy",
                lambda r: [forward_healthy(r), gradient_trend("healthy", r)]),
    "tanh zeros": (dict(init="zeros", act="tanh"), "symmetric", "symmetric", "grad_vanish",
                   lambda r: ["activations symmetric: every unit of a layer computes the same value "
                              "(layers 1–10); their gradients are identical too, so training cannot "
                              "tell them apart", "activations constant: std exactly 0 in all layers"]),
    "sigmoid xavier, forward only": (dict(init="xavier", act="sigmoid", backward=False), "healthy",
                                     "healthy", None, lambda r: [forward_healthy(r)]),
    # sigma_w^2 = 100 * 0.05 = 5: tanh's activations settle at a fixed point, its gradients grow
    "tanh N(0, 0.05), 20 layers": (dict(init="normal:std=0.2236", act="tanh", layers=20), "grad_explode",
                                   "healthy", "grad_explode",
                                   lambda r: [gradient_trend("explode", r), forward_healthy(r)]),
    "relu N(0, 1)": (dict(init="normal:std=1", act="relu"), "explode", "explode", "grad_explode",
                     lambda r: [forward_trend("explode", r), gradient_trend("explode", r)]),
}


@pytest.fixture(scope="module")
def case_runs():
    return {name: run_experiment({**SMALL, **case[0]}) for name, case in CASES.items()}


@pytest.mark.parametrize("name", CASES)
def test_verdict_names_the_worse_pass_first(case_runs, name):
    _, verdict, forward, backward, texts = CASES[name]
    r = case_runs[name]
    diag = r.diagnosis
    assert (diag["verdict"], diag["forward"], diag["backward"]) == (verdict, forward, backward)
    assert diag["findings"][0]["code"] == verdict
    want = texts(r)
    assert [f["text"] for f in diag["findings"][:len(want)]] == want
    if backward is None:  # a forward-only run judges no gradients at all
        assert not any(f["text"].startswith("gradients") for f in diag["findings"])


def test_sigmoid_xavier_is_not_called_healthy_when_its_gradients_vanish(case_runs):
    r = case_runs["sigmoid xavier"]
    g = r.column("grad_pre", "std")
    factor = (g[0] / g[-1]) ** (1 / 9)
    # mean field: each layer back multiplies Var[dL/dz] by chi_1 = sigma_w^2 E[sigma'(z)^2] = 0.0557
    assert factor == pytest.approx(math.sqrt(r.extra["theory"]["chi_1"]), rel=0.05)
    assert f"{factor:.2f}" == "0.23"
    assert r.diagnosis["verdict"] != "healthy"
    assert r.diagnosis["findings"][0]["text"].startswith("gradients vanish: grad std ×0.23 per layer")


def test_terminal_and_figure_titles_show_both_passes_worst_first(case_runs):
    from actstats.plots import _finding_lines
    from actstats.render import diagnosis_grid

    r = case_runs["sigmoid xavier"]
    grad, fwd = gradient_trend("vanish", r), forward_healthy(r)
    console = Console(width=300, record=True)
    console.print(diagnosis_grid(r))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[:2] == [f"Diagnosis: {grad}", f"           {fwd}"]
    assert _finding_lines(r) == [f"verdict: grad_vanish — {grad}", fwd]
    he = case_runs["relu he"]
    assert _finding_lines(he) == [f"verdict: healthy — {forward_healthy(he)}", gradient_trend("healthy", he)]
    # a forward-only "healthy" says the gradients were not judged, beside the verdict (fresh-eyes
    # finding: read alone, it looked like healthy gradients for a net whose gradients vanish)
    only = case_runs["sigmoid xavier, forward only"]
    unjudged = "gradients not judged: no backward pass (--forward-only)"
    assert _finding_lines(only) == [f"verdict: healthy — {forward_healthy(only)}", unjudged]
    console = Console(width=300, record=True)
    console.print(diagnosis_grid(only))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[:3] == [f"Diagnosis: {forward_healthy(only)}", f"           {unjudged}",
                         "           " + only.diagnosis["findings"][1]["text"]]  # theory's line last
    assert only.diagnosis["findings"][1]["code"] == "theory"
    assert unjudged not in _finding_lines(he) and "not judged" not in str(he.diagnosis)


def test_unjudged_gradients_are_said_only_when_known():
    from actstats.diagnosis import unjudged

    assert unjudged({"verdict": "healthy", "backward": None}, False) == \
        "gradients not judged: no backward pass (--forward-only)"
    assert unjudged({"verdict": "healthy", "backward": None}, True) == \
        "gradients not judged: a trend needs two layers of finite gradients"
    assert unjudged({"verdict": "healthy", "backward": "grad_healthy"}, True) is None
    assert unjudged({"verdict": "healthy", "findings": []}, True) is None  # saved by an older version


def test_healthy_text_with_one_std_and_lsuv_theory_line():
    # every layer's post std the same to 3 digits reads "stays at", not "between 0.628 and 0.628";
    # LSUV's layers have different variances: no phase, but a theory line says why
    kinds = set()
    for seed in range(6):  # LSUV: std equal at 3 digits in every layer for some seeds, not all
        r = run_experiment(RunConfig(init="lsuv", act="tanh", seed=seed, backward=False))
        s = r.column("post", "std")
        texts = [f["text"] for f in r.diagnosis["findings"]]
        shown = {f"{x:.3g}" for x in s}
        kinds.add(len(shown))
        if len(shown) == 1:
            assert f"activations healthy: post std stays at {s[0]:.3g} over layers 1–10" in texts
        else:
            assert (f"activations healthy: post std stays between {min(s):.3g} and {max(s):.3g} "
                    "over layers 1–10") in texts
    assert 1 in kinds and len(kinds) > 1  # both wordings were checked
    assert ("theory: each layer predicted from its own weights' variance; no phase, layers differ in "
            "sigma_w^2, so there is no single fixed point") in texts


SIGMOID_SWEEP = """\
name: sig
base: {act: sigmoid, layers: 10, width: 100, batch: 200}
grid: {init: [xavier]}
expect:
  - {claim: "the run is healthy", check: {verdict: healthy}}
  - {claim: "its gradients vanish", check: {verdict: grad_vanish}}
  - {claim: "its activations are healthy", check: {finding: healthy}}
"""


def test_sweep_report_and_claims_read_the_verdict_of_both_passes(case_runs, tmp_path):
    from click.testing import CliRunner

    from actstats.cli import cli

    (tmp_path / "sig.yaml").write_text(SIGMOID_SWEEP)
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "sig.yaml"), "--out", str(tmp_path),
                                      "--no-plots"], terminal_width=200)
    assert result.exit_code == 1, result.output  # one claim of three fails
    assert "Error: 1 of 3 claims do not hold (the run is healthy)." in result.output
    r = case_runs["sigmoid xavier"]  # the same run: same config and seed
    report = (tmp_path / "sig" / "report.md").read_text()
    assert "| ✗ | the run is healthy | all 1 runs | grad_vanish | verdict healthy |" in report
    assert "| ✓ | its activations are healthy | all 1 runs | healthy | finds healthy |" in report
    assert "  - sigmoid_xavier_L10_w100_n200: verdict grad_vanish" in report
    s = r.column("post", "std")
    assert (f"| `sigmoid_xavier_L10_w100_n200` | grad_vanish | {s[0]:#.4g} → {s[-1]:#.4g} | "
            f"{gradient_trend('vanish', r)}; {forward_healthy(r)} |") in report
