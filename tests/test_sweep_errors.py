"""Every mistake in a sweep file is one line on stderr, exit status 2, before any run: the file, the
key path, what was expected (and a did-you-mean for unknown names)."""

import numpy as np
import pytest
from click.testing import CliRunner

from actstats.cli import cli

OK_BASE = "base: {layers: 4, width: 10, batch: 5}\n"
GRID = "grid: {init: [xavier, he]}\n"


def claim(check, where=None):
    w = f"    where: {where}\n" if where else ""
    return OK_BASE + GRID + f"expect:\n  - claim: x\n{w}    check: {check}\n"


CASES = [
    # YAML syntax
    ("name: x\ngrid: {init: [a, b}\n",
     "F: line 2, column 19: YAML syntax error: expected ',' or ']', but got '}'."),
    # unknown keys at every level
    ("gird: {init: [he]}\n", "F: unknown key 'gird'; did you mean 'grid'?"),
    (OK_BASE + "seeds: 2\n", "F: a sweep needs grid: (lists of values) or runs: (a list of runs)."),
    (OK_BASE + GRID + "seed: 3\n", "F: unknown key 'seed' at the top level; run options go under base:."),
    (OK_BASE + GRID + "expcet: []\n", "F: unknown key 'expcet'; did you mean 'expect'?"),
    ("base: {layers: 4, widht: 10}\n" + GRID, "F: base: unknown run option 'widht'; did you mean 'width'?"),
    (OK_BASE + "grid: {actt: [tanh]}\n", "F: grid: unknown run option 'actt'; did you mean 'act'?"),
    (OK_BASE + "runs: [{init: he}, {intt: he}]\n", "F: runs[1]: unknown run option 'intt'; did you mean 'init'?"),
    (OK_BASE + GRID + "expect:\n  - {claim: x, chek: {verdict: healthy}}\n",
     "F: expect[0]: unknown key 'chek'; did you mean 'check'?"),
    (claim("{stat: post.std, layer: 1, lte: 1}"), "F: expect[0].check: unknown key 'lte'; did you mean 'lt'?"),
    (claim("{verdict: healthy}", "{innit: he}"), "F: expect[0].where: unknown key 'innit'; did you mean 'init'?"),
    # wrong types, with the key path and the expected type
    (OK_BASE + "grid: {layers: 3}\n", "F: grid.layers: expected a list, got int."),
    ("base: [layers, 3]\n" + GRID, "F: base: expected a mapping, got list."),
    (OK_BASE + "grid: [init, he]\n", "F: grid: expected a mapping of option: [values], got list."),
    (OK_BASE + "runs: {init: he}\n", "F: runs: expected a list of mappings, got mapping."),
    (OK_BASE + GRID + "seeds: three\n", "F: seeds: expected a count or a list of seeds, got string."),
    (OK_BASE + GRID + "expect: {check: 1}\n", "F: expect: expected a list of claims, got mapping."),
    (claim("{stat: post.std, layer: 1, lt: small}"), "F: expect[0].check.lt: expected a number, got string."),
    (OK_BASE + GRID + "name: my sweep\n",
     "F: name: expected a folder name (letters, digits, . _ + -), got 'my sweep'."),
    # empty
    (OK_BASE + "grid: {}\n", "F: grid: is empty; give at least one option with a list of values."),
    (OK_BASE + "grid: {init: []}\n", "F: grid.init: empty list; give at least one value."),
    (OK_BASE + "runs: []\n", "F: runs: empty list; give at least one run."),
    # bad values, located
    (OK_BASE + "grid: {init: [he, xaviar]}\n", "F: grid.init[1]: unknown init 'xaviar'; did you mean 'xavier'?"),
    ("base: {layers: 0}\n" + GRID, "F: base: layers == 0, must be >= 1."),
    (OK_BASE + GRID + "seeds: 2\nruns: [{seed: 1}]\n",
     "F: runs sets seed, and seeds: repeats every run over seeds; use one of them."),
    (OK_BASE + "runs: [{init: he}, {init: he}]\n", "F: runs 1 and 2 are the same run (init=he); remove one."),
    # bad claims
    (claim("{stat: post.sdt, layer: 1, lt: 1}"), "F: expect[0].check.stat: unknown stat 'post.sdt'; did you mean 'post.std'?"),
    (claim("{stat: std, layer: 1, lt: 1}"), "F: expect[0].check.stat: unknown stat 'std'; did you mean 'pre.std'?"),
    (claim("{stat: post.std, layer: 12, lt: 1}"),
     "F: expect[0].check: layer 12 does not exist in a net of 4 layers (run init=xavier)."),
    (claim("{stat: post.std, layer: 0, lt: 1}"),
     "F: expect[0].check: layer 0 does not exist; layers count from 1 (or from -1 at the output) (run init=xavier)."),
    (claim("{stat: post.std, layer: lats, lt: 1}"), "F: expect[0].check.layer: 'lats' is not a layer; did you mean 'last'?"),
    (claim("{verdict: colapse}"), "F: expect[0].check.verdict: unknown verdict 'colapse'; did you mean 'collapse'?"),
    (claim("{verdict: healthy}", "{init: lecun}"), "F: expect[0].where: no run has init=lecun."),
    (claim("{stat: post.std, layer: 1, lt: {where: {init: lecun}}}", "{init: he}"),
     "F: expect[0].check.lt.where: run init=he has no counterpart with init=lecun (the same run but for these fields)."),
    (claim("{stat: post.std, layer: 1, approx: 1}"),
     "F: expect[0].check: approx needs a tolerance: rel: (relative) or abs: (absolute)."),
    (claim("{stat: post.symmetric, layer: all, lt: 1}"),
     "F: expect[0].check.lt: post.symmetric is true or false; compare it with eq:."),
    (claim("{stat: post.std, layer: 1}"),
     "F: expect[0].check: needs an operator: lt, le, gt, ge, eq, approx, between."),
    (claim("{stat: post.std, layer: 1, lt: 1, over_seeds: mean}"),
     "F: expect[0].check.over_seeds: the runs do not vary seed (add seeds:)."),
    (claim("{stat: post.std, layer: 1, per_layer: true, lt: 1}"),
     "F: expect[0].check.per_layer: needs over: (the ratio to take per layer)."),
    (OK_BASE.replace("}", ", backward: false}") + GRID + "expect:\n  - check: {stat: grad_pre.std, layer: 1, lt: 1}\n",
     "F: expect[0].check.stat: grad_pre.std needs the backward pass, but a selected run has backward: false."),
    (OK_BASE.replace("}", ", backward: false}") + GRID + "expect:\n  - check: {verdict: [healthy, grad_vanish]}\n",
     "F: expect[0].check.verdict: grad_vanish needs the backward pass, but a selected run has backward: false."),
]


@pytest.mark.parametrize("text, message", CASES, ids=[m[3:50] for _, m in CASES])
def test_sweep_file_errors_are_one_line_exit_2(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output == "Error: " + message.replace("F: ", f"{path}: ", 1) + "\n"
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("args, message", [
    (["--set", "widht=3"], "F: --set: unknown run option 'widht'; did you mean 'width'?"),
    (["--set", "init=he"], "F: --set init: 'init' is a grid axis; edit grid.init instead."),
    (["--set", "layers=0"], "F: --set: layers == 0, must be >= 1."),  # the file's base: is valid
    (["--set", "width"], "--set width: expected KEY=VALUE, e.g. --set width=100."),
    (["--jobs", "0"], "jobs == 0, must be >= 1."),
])
def test_option_errors(tmp_path, args, message):
    path = tmp_path / "s.yaml"
    path.write_text(OK_BASE + GRID)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert result.output == "Error: " + message.replace("F: ", f"{path}: ", 1) + "\n"


def test_a_bad_base_is_blamed_on_the_file_even_with_set(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: {layers: 0, width: 10}\n" + GRID)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "o"), "--set", "batch=5"])
    assert (result.exit_code, result.output) == (2, f"Error: {path}: base: layers == 0, must be >= 1.\n")


def test_missing_file_and_report_of_a_missing_folder(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", str(tmp_path / "nope.yaml")])
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path / 'nope.yaml'}: no such file.\n")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path / 'nope'}: no such folder.\n")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.output == f"Error: {tmp_path / 'empty'}: no sweep.yaml and no complete results folders in it.\n"


def sigmoid_q10() -> str:
    """The refusal of critical:q_star=10 for sigmoid: on the critical line sigma_b2 = q -
    E[phi^2] / E[phi'^2] at q = 10, by a 101-node Gauss-Hermite rule (phi is smooth); the bound
    45.63 is test_theory.py's."""
    u, w = np.polynomial.hermite_e.hermegauss(101)
    phi = 1 / (1 + np.exp(-np.sqrt(10.0) * u))
    sigma_b2 = 10 - (w @ phi**2) / (w @ (phi * (1 - phi)) ** 2)
    return (f"sigmoid has no critical point with q_star == 10: it would need sigma_b2 == {sigma_b2:.3g} "
            "< 0; q_star must be >= 45.63.")


@pytest.mark.parametrize("text, where, run_args, reason", [
    ("base: {act: gelu, layers: 3, width: 20}\ngrid: {init: [critical:q_star=4, critical]}\n",
     "run 2 (init=critical)", ["--act", "gelu", "--init", "critical"],
     "gelu has no stable critical point with q_star == 1: the length map's slope there is 1.067 "
     ">= 1, so q_l moves away from it; q_star must be >= 3.562."),  # test_theory_cli.GELU_Q1
    ("base: {layers: 3, width: 20, init: critical:q_star=10}\nruns: [{act: tanh}, {act: sigmoid}]\n",
     "run 2 (act=sigmoid)", ["--act", "sigmoid", "--init", "critical:q_star=10"], sigmoid_q10()),
    ("base: {layers: 3, width: 20, init: critical}\ngrid: {bias_init: [zeros, normal]}\n",
     "run 2 (bias_init=normal)", ["--init", "critical", "--bias-init", "normal"],
     "init 'critical' sets the biases too (N(0, sigma_b^2)); leave --bias-init at zeros."),
])
def test_an_unsatisfiable_critical_init_refuses_the_sweep_before_any_run(tmp_path, text, where,
                                                                         run_args, reason):
    # the single run's own error, found once its net is built, is the sweep's at load time
    single = CliRunner().invoke(cli, ["run", *run_args, "--layers", "3", "--width", "20",
                                      "--out", str(tmp_path / "single")])
    assert (single.exit_code, single.output) == (2, f"Error: {reason}\n")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(out), "--jobs", "1"])
    assert (result.exit_code, result.output) == (2, f"Error: {path}: {where}: {reason}\n")
    assert not out.exists() and not (tmp_path / "single").exists()
