"""`actstats theory` and the predicted curves in the sweep figures.

Expected numbers come from closed forms (ReLU: E[phi^2] = q/2, E[phi'^2] = 1/2; tanh at sigma_w^2 = 1,
sigma_b^2 = 0: phi'(0)^2 = 1) or from theory.fixed_point called here on the same (sigma_w^2, sigma_b^2);
sigma_w^2 itself is computed by hand from each init's formula on a square net.
"""

import json
import math
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from actstats import theory
from actstats.cli import cli


def invoke(args):
    return CliRunner().invoke(cli, ["theory", *args], catch_exceptions=False)


def table_row(output: str, init: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``init``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == init:
            return cells
    raise AssertionError(f"no row {init!r} in\n{output}")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_relu_he_is_critical_with_q_star_2_and_chi_1_exactly(tmp_path):
    out = invoke(["--act", "relu", "--init", "he", "--no-plots", "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)["inits"]
    # He: Var[W] = gain^2/fan_in, gain^2 = 2 exactly (not sqrt(2)**2). The ReLU length map
    # q -> sigma_w^2 q/2 then fixes every q: q* = sigma_w^2 q0 = 2, chi_1 = sigma_w^2/2 = 1, exactly.
    assert (row["sigma_w2"], row["sigma_b2"], row["q_star"], row["chi_1"]) == (2.0, 0.0, 2.0, 1.0)
    assert row["phase"] == "critical" and row["xi_c"] is None  # infinite depth scale: JSON null
    table = invoke(["--act", "relu", "--init", "he", "--no-plots"])
    assert table_row(table.output, "he") == ["he", "2", "0", "2", "1", "∞", "critical"]
    # the same point for any input scale: chi_1 = 2 * 1/2 = 1 and q* = 2 q0
    for q0 in (1e-3, 0.5, 7.0):
        fp = theory.fixed_point("relu", 2.0, 0.0, q0)
        assert (fp.q_star, fp.chi_1, fp.phase) == (2 * q0, 1.0, "critical")


@pytest.mark.parametrize("init", ["xavier", "lecun"])
def test_tanh_unit_variance_without_bias_is_the_critical_point(init):
    # square net: Glorot's 2/(fan_in+fan_out) = LeCun's 1/fan_in, sigma_w^2 = 1; chi_1 = phi'(0)^2 = 1
    out = invoke(["--act", "tanh", "--init", init, "--no-plots", "--json"])
    (row,) = json.loads(out.output)["inits"]
    assert (row["sigma_w2"], row["sigma_b2"], row["q_star"]) == (1.0, 0.0, 0.0)
    assert row["chi_1"] == pytest.approx(1.0, abs=1e-15) and row["phase"] == "critical"
    table = invoke(["--act", "tanh", "--init", init, "--no-plots"])
    assert table_row(table.output, init)[1:] == ["1", "0", "0", "1", "∞", "critical"]


def test_json_numbers_are_theory_fixed_points_of_the_hand_computed_point():
    out = invoke(["--act", "tanh", "--no-plots", "--json", "--width", "400"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert (data["act"], data["width"], data["q0"], data["phase_diagram"]) == ("tanh", 400, 1.0, None)
    rows = {r["init"]: r for r in data["inits"]}
    critical = theory.critical_point("tanh", target_q=1.0)
    by_hand = {  # sigma_w^2 = fan_in Var[W], fan_in = fan_out = 400
        "normal:std=0.01": 400 * 0.01**2, "pytorch_linear": 400 * (2 / math.sqrt(400)) ** 2 / 12,
        "xavier": 400 * 2 / 800, "lecun": 1.0, "he": 2.0, "kaiming_normal:nonlinearity=tanh": 25 / 9,
        "normal:std=1": 400.0, "critical:q_star=1": critical.sigma_w2,
        "lsuv": 1 / theory.expectation("tanh", 1.0, "phi2"),  # q = 1 at every layer
    }
    assert list(rows) == list(by_hand)
    for name, sigma_w2 in by_hand.items():
        row = rows[name]
        assert row["sigma_w2"] == pytest.approx(sigma_w2, rel=1e-12), name
        sigma_b2 = critical.sigma_b2 if name.startswith("critical") else 0.0
        assert row["sigma_b2"] == pytest.approx(sigma_b2, rel=1e-12)
        fp = theory.fixed_point("tanh", row["sigma_w2"], row["sigma_b2"])
        for key, want in fp._asdict().items():
            assert row[key] == (want if not isinstance(want, float) or math.isfinite(want) else None), \
                (name, key)
    assert rows["lsuv"]["q_star"] == pytest.approx(1.0, rel=1e-12)
    assert rows["critical:q_star=1"]["chi_1"] == pytest.approx(1.0, abs=1e-12)


def test_phase_diagram_png_is_written_atomically_where_it_says(tmp_path):
    out = invoke(["--act", "relu", "--init", "he", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    path = tmp_path / "theory-relu_he" / "phase.png"  # an --init's diagram beside the classic one
    assert f"Wrote {path}" in out.output
    data = path.read_bytes()
    assert png_size(data) == (850, 600) and len(data) > 20_000  # 8.5 x 6 in at 100 dpi
    assert [p.name for p in path.parent.iterdir()] == ["phase.png"]  # no temporary left
    again = invoke(["--act", "relu", "--init", "he", "--out", str(tmp_path), "--json", "-q"])
    assert json.loads(again.output)["phase_diagram"] == str(path)


def test_init_without_prediction_still_gets_the_diagram_and_says_it_has_no_star(tmp_path):
    out = CliRunner(env={"COLUMNS": "400"}).invoke(cli, ["theory", "--init", "ones", "--out", str(tmp_path)])
    path = tmp_path / "theory-tanh_ones" / "phase.png"
    assert out.exit_code == 0 and out.output.splitlines()[-1] == \
        f"Wrote {path} (the classic inits only: ones has no prediction, so no star)"
    data = path.read_bytes()
    assert png_size(data) == (850, 600)
    invoke(["--out", str(tmp_path)])  # the classic inits alone: no note under the title, own folder
    assert data != (tmp_path / "theory-tanh" / "phase.png").read_bytes() and path.read_bytes() == data
    invoke(["--init", "xavier", "--bias-init", "normal:std=0.1", "--out", str(tmp_path)])
    assert (tmp_path / "theory-tanh_xavier_bnormal-std0.1" / "phase.png").exists()


def test_no_plots_and_quiet(tmp_path):
    out = invoke(["--act", "tanh", "--out", str(tmp_path), "--no-plots", "--quiet"])
    assert out.exit_code == 0 and out.output == ""
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--act", "tanhh"], "Error: unknown activation 'tanhh'; did you mean 'tanh'?"),
    (["--init", "xaviar"], "Error: unknown init 'xaviar'; did you mean 'xavier'?"),
    (["--init", "normal:sdt=1"], "Error: init 'normal' has no parameter 'sdt'; did you mean 'std'?"),
    (["--bias-init", "lsuv"], "Error: bias init 'lsuv' is a weight init; it cannot initialize biases."),
    (["--width", "0"], "Error: width == 0, must be >= 1."),
    (["--width", "many"], "Error: Invalid value for '--width': 'many' is not a valid integer."),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = invoke([*args, "--out", str(tmp_path)])
    assert out.exit_code == 2
    assert out.output == message + "\n"
    assert not any(tmp_path.iterdir())


def test_unwritable_output_is_a_failure(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = invoke(["--act", "relu", "--out", str(blocker / "sub")])
    assert out.exit_code == 1
    assert out.output.startswith(f"Error: cannot write {blocker / 'sub' / 'theory-relu' / 'phase.png'}: ")
    assert out.output.count("\n") == 1 and blocker.read_text() == "x"


@pytest.mark.parametrize("args, line", [
    (["--init", "ones"], "ones: no prediction, constant init 'ones': weights are not zero-mean i.i.d., so "
                         "every unit of a layer is identical; mean-field theory does not apply."),
    (["--init", "constant:value=0.5"], "constant:value=0.5: no prediction, constant init "
                                       "'constant:value=0.5': weights are not zero-mean i.i.d., so every "
                                       "unit of a layer is identical; mean-field theory does not apply."),
    (["--init", "normal:mean=0.1"], "normal:mean=0.1: no prediction, init 'normal:mean=0.1' has mean 0.1 "
                                    "!= 0: every unit gets the same shift; the zero-mean mean-field theory "
                                    "does not apply."),
])
def test_constant_and_shifted_inits_get_one_line_saying_why(args, line):
    out = CliRunner(env={"COLUMNS": "400"}).invoke(cli, ["theory", *args, "--no-plots"])
    assert out.exit_code == 0
    assert out.output == line + "\n"  # no table, no numbers
    (row,) = json.loads(invoke([*args, "--no-plots", "--json", "-q"]).output)["inits"]
    assert set(row) == {"init", "bias_init", "reason"} and line.endswith(row["reason"])


def test_help_has_examples():
    out = CliRunner().invoke(cli, ["theory", "--help"])
    assert out.exit_code == 0 and "Examples:\n    actstats theory --act tanh " in out.output
    for option in ("--act", "--init", "--bias-init", "--width", "--out", "--no-plots", "--json", "--quiet"):
        assert option in out.output


# --- the predicted curves in the sweep figure -------------------------------------------------------


def test_sweep_profile_draws_each_prediction_dashed_with_the_stored_theory_std(tmp_path):
    from actstats import load_results, run_experiment
    from actstats.sweep import SweepConfig
    from actstats.sweep_plots import THEORY_LABEL, profiles_figure

    spec = SweepConfig.from_dict({"name": "t", "base": {"layers": 4, "width": 30, "batch": 50, "act": "tanh"},
                                  "grid": {"init": ["xavier", "normal:std=0.3", "ones"]}}, where="s.yaml")
    results = {}
    for run in spec.runs:  # through stats.json, as `actstats report` reads them
        run_experiment(run.config).save(tmp_path / run.name, plots=False)
        results[run.name] = load_results(tmp_path / run.name)
    fig = profiles_figure(spec, results)
    predicted = [r for r in spec.runs if r.config.init != "ones"]  # ones: no prediction, no line
    for ax, tensor in zip(fig.axes, ("pre", "post", "grad_pre")):
        measured = [ln for ln in ax.get_lines() if ln.get_label() != THEORY_LABEL]
        dashed = [ln for ln in ax.get_lines() if ln.get_label() == THEORY_LABEL]
        assert len(dashed) == len(predicted) and len(measured) == 3
        for ln, run in zip(dashed, predicted):
            want = [layer["theory"][f"{tensor}_std"] for layer in results[run.name].layers]
            assert np.array_equal(ln.get_ydata(), want)
            assert ln.get_linestyle() == "--"
            twin = next(m for m in measured if np.array_equal(m.get_ydata(), results[run.name].column(tensor, "std")))
            assert ln.get_color() == twin.get_color()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels.count(THEORY_LABEL) == 1 and labels[-1] == THEORY_LABEL


def test_homogeneous_activations_say_why_q_star_is_the_first_layers_q():
    # fresh-eyes finding: ReLU's critical:q_star=1 row shows q* = 2 (the length map q -> sigma_w^2 q/2
    # is the identity at sigma_w^2 = 2, so q* = sigma_w^2 E[x^2] = 2 whatever q_star asks); the caption
    # says so, for ReLU and not for tanh
    why = "on its critical line every q is a fixed point"
    relu = invoke(["--act", "relu", "--no-plots"])
    tanh = invoke(["--act", "tanh", "--no-plots"])
    assert why in " ".join(relu.output.split()) and why not in " ".join(tanh.output.split())


GELU_Q1 = ("gelu has no stable critical point with q_star == 1: the length map's slope there is 1.067 "
           ">= 1, so q_l moves away from it; q_star must be >= 3.562.")  # numbers: test_theory.py


def test_gelu_critical_q_star_1_is_refused_by_run_and_explained_by_theory(tmp_path):
    out = CliRunner().invoke(cli, ["run", "--act", "gelu", "--init", "critical", "--layers", "3",
                                   "--width", "20", "--out", str(tmp_path)])
    assert (out.exit_code, out.output) == (2, f"Error: {GELU_Q1}\n")
    assert not any(tmp_path.iterdir())
    rows = json.loads(invoke(["--act", "gelu", "--no-plots", "--json", "-q"]).output)["inits"]
    assert next(r for r in rows if r["init"] == "critical:q_star=1")["reason"] == GELU_Q1
    (row,) = json.loads(invoke(["--act", "gelu", "--init", "critical:q_star=4", "--no-plots", "--json",
                                "-q"]).output)["inits"]
    assert row["q_star"] == pytest.approx(4.0, rel=1e-9) and row["phase"] == "critical"
