"""Sweeps: grid expansion, seeds, overrides, names, the runner (resume, failures, --jobs), the CLI and
the report. Small nets (a few layers of a few dozen units) keep it fast."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actstats import RunConfig
from actstats.cli import cli
from actstats.errors import ConfigError
from actstats.sweep import (LocalExecutor, SerialExecutor, SweepConfig, execute, parse_overrides,
                            run_sweep)

SMALL = {"layers": 3, "width": 24, "batch": 40}


def write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def sweep_of(data, overrides=None):
    return SweepConfig.from_dict(data, where="s.yaml", overrides=overrides)


# --- expansion -----------------------------------------------------------------------------------------

def test_grid_is_the_cartesian_product_in_file_order_with_readable_names():
    s = sweep_of({"name": "g", "base": SMALL,
                  "grid": {"init": ["normal:std=0.01", "xavier"], "act": ["tanh", "relu", "sigmoid"]}})
    assert [r.name for r in s.runs] == [
        "init=normal-std0.01_act=tanh", "init=normal-std0.01_act=relu", "init=normal-std0.01_act=sigmoid",
        "init=xavier_act=tanh", "init=xavier_act=relu", "init=xavier_act=sigmoid"]
    assert [(r.config.init, r.config.act) for r in s.runs][:2] == [("normal:std=0.01", "tanh"),
                                                                  ("normal:std=0.01", "relu")]
    assert all(r.config.layers == 3 and r.config.width == 24 and r.config.batch == 40 for r in s.runs)
    assert s.axes == ("init", "act") and s.varied == ("init", "act")
    assert s.runs[0].label == "init=normal:std=0.01, act=tanh"
    # deterministic: the same file gives the same plan
    assert [r.name for r in sweep_of({"base": SMALL, "grid": {"init": ["normal:std=0.01", "xavier"],
                                     "act": ["tanh", "relu", "sigmoid"]}}).runs] == [r.name for r in s.runs]


def test_runs_times_grid_times_seeds():
    s = sweep_of({"base": SMALL, "runs": [{"act": "tanh"}, {"name": "wide", "act": "relu", "width": 48}],
                  "grid": {"init": ["he", "lecun"]}, "seeds": 3})
    assert len(s.runs) == 2 * 2 * 3
    assert [r.config.seed for r in s.runs[:6]] == [0, 1, 2, 0, 1, 2]
    # every field written in runs: or grid: that varies is in the name (width too: 24 vs 48)
    assert [r.name for r in s.runs[:3]] == ["act=tanh_width=24_init=he_seed=0",
                                            "act=tanh_width=24_init=he_seed=1",
                                            "act=tanh_width=24_init=he_seed=2"]
    # a named entry's name stands for the fields set in the entries
    assert s.runs[6].name == "wide_init=he_seed=0"
    assert (s.runs[6].config.width, s.runs[6].config.act) == (48, "relu")
    assert s.seeds == (0, 1, 2)
    assert [r.config.seed for r in sweep_of({"base": SMALL, "grid": {"init": ["he"]},
                                             "seeds": [5, 9]}).runs] == [5, 9]


def test_a_width_list_in_a_run_sets_its_depth():
    s = sweep_of({"base": {"layers": 10, "width": 30, "batch": 8},
                  "runs": [{"width": "10,20,40"}, {"act": "relu"}]})
    assert s.runs[0].config.widths == (10, 20, 40) and s.runs[0].config.layers == 3
    assert s.runs[1].config.layers == 10


def test_overrides_reach_base_and_the_entries_that_set_the_key():
    data = {"base": {**SMALL, "batch": 1000}, "runs": [{"act": "tanh"}, {"act": "relu", "batch": 500}]}
    s = sweep_of(data, overrides={"batch": 16})
    assert [r.config.batch for r in s.runs] == [16, 16]
    assert s.spec["base"]["batch"] == 16 and s.spec["runs"][1]["batch"] == 16
    assert data["base"]["batch"] == 1000  # the caller's mapping is left alone
    with pytest.raises(Exception, match=r"^s.yaml: --set act: 'act' is a grid axis; edit grid.act instead.$"):
        sweep_of({"base": SMALL, "grid": {"act": ["tanh", "relu"]}}, overrides={"act": "relu"})


def test_parse_overrides_types_values_like_yaml():
    assert parse_overrides(["width=100", "init=normal:std=0.1", "width-list=100,200", "input_dim=none"]) == {
        "width": 100, "init": "normal:std=0.1", "width_list": "100,200", "input_dim": None}
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        parse_overrides(["width"])


def test_the_same_run_twice_is_an_error():
    with pytest.raises(Exception, match=r"runs 1 and 2 are the same run"):
        sweep_of({"base": SMALL, "runs": [{"init": "normal"}, {"init": "normal:std=1.0"}]})


# --- the runner ----------------------------------------------------------------------------------------

def small_sweep(n_inits=3, **extra):
    inits = ["normal:std=0.01", "xavier", "he", "lecun", "normal:std=1", "xavier_uniform"][:n_inits]
    return sweep_of({"name": "s", "base": SMALL, "grid": {"init": inits}, **extra})


def stats_mtimes(folder):
    return {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("*/stats.json")
            if not p.parent.name.startswith(".")}


def test_serial_run_writes_one_complete_folder_per_run(tmp_path):
    s = small_sweep()
    state = run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False)
    assert state.status == {r.name: "done" for r in s.runs}
    for r in s.runs:
        stored = json.loads((tmp_path / "s" / r.name / "stats.json").read_text())
        assert stored["config"] == r.config.to_dict()
    assert (tmp_path / "s" / "sweep.yaml").is_file() and not (tmp_path / "s" / "failed").exists()


def test_resume_after_interruption_keeps_finished_runs_and_redoes_the_partial_one(tmp_path, monkeypatch):
    from actstats import results

    s = small_sweep(5)
    real_save = results.save
    saved = []

    def interrupted_save(result, path, **kw):
        if len(saved) == 2:  # Ctrl-C while the third run is being written, after a few files
            (Path(path).parent / f".{Path(path).name}.x1.partial").mkdir()
            (Path(path).parent / f".{Path(path).name}.x1.partial" / "stats.json").write_text("{")
            raise KeyboardInterrupt
        saved.append(Path(path).name)
        return real_save(result, path, **kw)

    monkeypatch.setattr(results, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False)
    folder = tmp_path / "s"
    assert sorted(stats_mtimes(folder)) == sorted(saved) == sorted(r.name for r in s.runs[:2])
    # a run killed hard between the files of its folder: no stats.json, so not complete
    partial = folder / s.runs[3].name
    partial.mkdir()
    (partial / "stats.csv").write_text("half")
    before = stats_mtimes(folder)

    monkeypatch.setattr(results, "save", real_save)
    state = run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False)
    assert [state.status[r.name] for r in s.runs] == ["skipped", "skipped", "done", "done", "done"]
    after = stats_mtimes(folder)
    assert all(after[name] == t for name, t in before.items())  # finished runs not redone
    assert sorted(after) == sorted(r.name for r in s.runs)
    assert not list(folder.glob(".*partial"))  # the staging left by the interruption is gone
    # --fresh redoes everything; a changed config redoes only the changed runs
    state = run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False, fresh=True)
    assert set(state.status.values()) == {"done"}
    changed = small_sweep(5, seeds=[0])  # same configs (seed 0): nothing to do
    assert set(run_sweep(changed, tmp_path, executor=SerialExecutor(), plots=False).status.values()) == {"skipped"}


def test_kill_9_mid_sweep_then_resume(tmp_path):
    """A real kill of the whole process group: every run folder is either complete or not there."""
    cfg = write(tmp_path, "name: k\nbase: {layers: 4, width: 120, batch: 1500}\n"
                          "grid: {init: [xavier, he, lecun, normal, xavier_uniform, he_uniform]}\n")
    cmd = [sys.executable, "-m", "actstats", "sweep", str(cfg), "--out", str(tmp_path / "r"), "--jobs", "1",
           "--no-plots", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    folder = tmp_path / "r" / "k"
    deadline = time.time() + 60
    while time.time() < deadline and len(stats_mtimes(folder)) < 2 and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = stats_mtimes(folder)
    assert 2 <= len(done) < 6, "the sweep finished before it could be killed; make its runs longer"
    for p in folder.iterdir():
        if p.is_dir() and not p.name.startswith(".") and p.name != "failed":
            assert (p / "stats.json").is_file() or not (p / "config.yaml").exists() or p.name not in done
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    after = stats_mtimes(folder)
    assert len(after) == 6 and all(after[n] == t for n, t in done.items())


def fails_for_seed_7(config, plots=True):
    if config.seed == 7:
        raise MemoryError
    return execute(config, plots)


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    from actstats import experiment

    real = experiment.run_experiment

    def flaky(config, progress=None):
        if config.init == "he":
            raise MemoryError
        if config.init == "lecun":
            raise ValueError("boom")
        return real(config)

    monkeypatch.setattr(experiment, "run_experiment", flaky)
    s = small_sweep(4)
    state = run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False)
    assert state.status == {"init=normal-std0.01": "done", "init=xavier": "done",
                            "init=he": "failed", "init=lecun": "failed"}
    rec = json.loads((tmp_path / "s" / "failed" / "init=he.json").read_text())
    assert rec["error"] == "MemoryError" and rec["message"].startswith("out of memory")
    assert rec["config"]["init"] == "he"
    rec = json.loads((tmp_path / "s" / "failed" / "init=lecun.json").read_text())
    assert (rec["error"], rec["message"]) == ("ValueError", "boom") and "Traceback" in rec["traceback"]
    assert not (tmp_path / "s" / "init=he").exists()
    # once it works, the run is done and its failure record goes
    monkeypatch.setattr(experiment, "run_experiment", real)
    state = run_sweep(s, tmp_path, executor=SerialExecutor(), plots=False)
    assert state.failures == {} and not (tmp_path / "s" / "failed").exists()


def crash_for_he(config, plots=True):
    if config.init == "he":
        os._exit(3)  # the worker dies, as when the kernel kills it for memory
    return execute(config, plots)


def test_a_dying_worker_costs_only_its_own_run(tmp_path):
    s = small_sweep(4)
    with LocalExecutor(2) as ex:
        state = run_sweep(s, tmp_path, executor=ex, plots=False, task=crash_for_he)
    assert state.status == {"init=normal-std0.01": "done", "init=xavier": "done", "init=he": "failed",
                            "init=lecun": "done"}
    assert "worker process died twice" in state.failures["init=he"]["message"]


def test_memory_refusal_inside_a_real_pool_is_a_failed_run(tmp_path):
    runner = CliRunner()
    cfg = write(tmp_path, "name: m\nbase: {layers: 2, width: 16, batch: 8}\n"
                          "runs: [{init: he}, {init: xavier, width: 300000, layers: 200}, {init: lecun}]\n")
    result = runner.invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path / "r"), "--jobs", "2", "--no-plots"])
    assert result.exit_code == 1
    bad = "init=xavier_width=300000_layers=200"  # fields set in runs: entries name the runs
    assert result.output.strip().splitlines()[-1] == (
        f"Error: 1 of 3 runs failed ({bad}); their errors are in {tmp_path / 'r' / 'm'}/failed/.")
    rec = json.loads((tmp_path / "r" / "m" / "failed" / f"{bad}.json").read_text())
    assert rec["error"] == "ConfigError" and "needs an estimated" in rec["message"]
    assert sorted(stats_mtimes(tmp_path / "r" / "m")) == ["init=he_width=16_layers=2",
                                                          "init=lecun_width=16_layers=2"]
    assert "failed" in (tmp_path / "r" / "m" / "report.md").read_text()


def test_jobs_2_gives_the_numbers_of_jobs_1_bit_for_bit(tmp_path):
    cfg = write(tmp_path, "name: j\nbase: {layers: 4, width: 64, batch: 100}\n"
                          "grid: {init: [xavier, he, normal:std=0.1], act: [tanh, relu]}\n")
    runner = CliRunner()
    for jobs in ("1", "2"):
        result = runner.invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path / jobs), "--jobs", jobs,
                                     "--no-plots", "--quiet"])
        assert result.exit_code == 0, result.output
    one = (tmp_path / "1" / "j" / "summary.csv").read_bytes()
    assert one == (tmp_path / "2" / "j" / "summary.csv").read_bytes()
    assert len(one.decode().splitlines()) == 1 + 6 * 4 * 4  # header + runs x layers x tensors


def test_comparison_figures_drawn_by_the_workers_equal_the_ones_drawn_here(tmp_path):
    from actstats import report
    from actstats.sweep_plots import FILES, sweep_figure_bytes

    spec = sweep_of({"name": "f", "base": SMALL, "grid": {"init": ["xavier", "he"]}, "seeds": 2})
    state = run_sweep(spec, tmp_path, jobs=2)
    assert sorted(state.figures) == sorted(FILES.values())  # drawn by the pool
    report.build(spec, state)
    here = sweep_figure_bytes(spec, state.results)
    for name, data in here.items():
        assert (tmp_path / "f" / name).read_bytes() == data


# --- CLI and report ------------------------------------------------------------------------------------

CLAIMED = """\
name: claimed
base: {act: tanh, layers: 4, width: 50, batch: 60}
grid:
  init: ["normal:std=0.01", xavier]
expect:
  - claim: "small weights collapse"
    where: {init: "normal:std=0.01"}
    check: [{stat: post.std, layer: last, lt: 1.0e-3}, {verdict: collapse}]
  - claim: "xavier keeps the std"
    where: {init: xavier}
    check: {stat: post.std, layer: last, over: first, gt: 0.3}
"""


def test_cli_sweep_writes_summary_report_and_checks_claims(tmp_path):
    cfg = write(tmp_path, CLAIMED)
    result = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "claimed"
    assert sorted(p.name for p in folder.iterdir()) == [
        "init=normal-std0.01", "init=xavier", "report.md", "summary.csv", "sweep.yaml"]
    lines = (folder / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("run,verdict,init,bias_init,act,layers,width,")
    assert len(lines) == 1 + 2 * 4 * 4
    assert lines[1].startswith("init=normal-std0.01,collapse,normal:std=0.01,zeros,tanh,4,50,")
    # the row's std is the run's own stats.json value
    stats = json.loads((folder / "init=xavier" / "stats.json").read_text())
    row = next(l for l in lines if l.startswith("init=xavier,") and ",4,50,50,post," in l)
    header = lines[0].split(",")
    assert float(row.split(",")[header.index("std")]) == stats["layers"][3]["post"]["std"]
    assert "✓ │ small weights collapse" in result.output and "✓ │ xavier keeps the std" in result.output
    report = (folder / "report.md").read_text()
    assert "## Claims: 2 of 2 hold" in report and "| ✓ | small weights collapse |" in report
    assert "| `init=xavier` | xavier | healthy |" in report
    for name in ("init=normal-std0.01", "init=xavier"):  # the runs table: 4 significant figures each
        layers = json.loads((folder / name / "stats.json").read_text())["layers"]
        row = next(line for line in report.splitlines() if line.startswith(f"| `{name}` |"))
        first, last = row.split(" | ")[3].split(" → ")
        for text, want in ((first, layers[0]["post"]["std"]), (last, layers[-1]["post"]["std"])):
            assert len(text.split("e")[0].replace(".", "").lstrip("0")) == 4, row
            assert float(text) == pytest.approx(want, rel=5e-4)
    # resumed: nothing computed again
    again = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots"])
    assert again.exit_code == 0 and "0 runs computed, 2 kept" in again.output
    # a quick --set check into the same folder does not silently replace the full-size results
    before = (folder / "init=xavier" / "stats.json").read_bytes()
    quick = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots", "--set", "batch=20"])
    assert quick.exit_code == 2
    assert quick.output.strip() == (f"Error: {folder} holds results of another config for init=normal-std0.01 "
                                    "and 1 more (batch 60 → 20); --fresh replaces them, or give another --out.")
    assert (folder / "init=xavier" / "stats.json").read_bytes() == before
    fresh = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots", "--set",
                                     "batch=20", "--fresh"])
    assert fresh.exit_code == 0 and json.loads((folder / "init=xavier" / "stats.json").read_text())[
        "config"]["batch"] == 20


def test_runs_table_numbers_keep_4_significant_figures():
    from actstats.report import sig4

    # README's xavier/ReLU run: 0.583 and 0.0242 beside 0.5844 and 0.02465 of the next seed
    assert [sig4(v) for v in (0.583, 0.0242, 0.5844, 0.02465, 1.0, 2.97e-07, 1e100)] == \
        ["0.5830", "0.02420", "0.5844", "0.02465", "1.000", "2.970e-07", "1.000e+100"]
    assert [sig4(v) for v in (0.0, float("inf"), float("nan"), None)] == ["0", "inf", "nan", "nan"]


def test_a_false_claim_exits_1_and_no_check_skips_it(tmp_path):
    cfg = write(tmp_path, CLAIMED.replace("gt: 0.3", "gt: 3"))
    result = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: 1 of 2 claims do not hold (xavier keeps the std)."
    assert "## Claims: 1 of 2 hold" in (tmp_path / "claimed" / "report.md").read_text()
    quiet = CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots", "--no-check",
                                     "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_report_rebuilds_from_saved_results_without_computing(tmp_path, monkeypatch):
    from actstats import experiment

    cfg = write(tmp_path, CLAIMED)
    assert CliRunner().invoke(cli, ["sweep", str(cfg), "--out", str(tmp_path), "--no-plots"]).exit_code == 0
    folder = tmp_path / "claimed"
    summary = (folder / "summary.csv").read_text()
    for name in ("summary.csv", "report.md"):
        (folder / name).unlink()
    monkeypatch.setattr(experiment, "run_experiment", lambda *a, **k: pytest.fail("recomputed"))
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "summary.csv").read_text() == summary
    assert {"std_by_layer.png", "last_layer.png"} <= {p.name for p in folder.iterdir()}
    report = (folder / "report.md").read_text()
    assert f"(from `{cfg}`)" in report and "![Std by layer](std_by_layer.png)" in report


def test_worker_figures_are_written_by_the_parent_and_a_plot_failure_keeps_the_numbers(tmp_path, monkeypatch):
    from actstats import plots

    monkeypatch.setattr(plots, "run_figure_bytes", lambda result: {"profile.png": b"\x89PNG fake"})
    s = small_sweep(2)
    run_sweep(s, tmp_path, executor=SerialExecutor(), plots=True)
    assert (tmp_path / "s" / "init=xavier" / "profile.png").read_bytes() == b"\x89PNG fake"

    def broken(result):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "run_figure_bytes", broken)
    state = run_sweep(s, tmp_path / "b", executor=SerialExecutor(), plots=True)
    assert set(state.status.values()) == {"done"}
    assert state.warnings == ["init=normal-std0.01: figures not drawn (RuntimeError: no fonts)",
                              "init=xavier: figures not drawn (RuntimeError: no fonts)"]


def test_run_config_and_sweep_files_point_to_each_other(tmp_path):
    runner = CliRunner()
    sweep_file = write(tmp_path, CLAIMED)
    result = runner.invoke(cli, ["run", "--config", str(sweep_file), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output == (f"Error: {sweep_file} is a sweep file (it has grid:, runs: or expect:); "
                             f"run it with 'actstats sweep {sweep_file}'.\n")
    run_file = write(tmp_path, "init: he\nact: relu\n", "run.yaml")
    result = runner.invoke(cli, ["sweep", str(run_file), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output == (f"Error: {run_file}: this is a run config, not a sweep (no grid: or runs:); "
                             f"run it with 'actstats run --config {run_file}', or put its options under "
                             "base: and add a grid:.\n")
    assert not (tmp_path / "r").exists()


def test_help_lists_the_sweep_options():
    result = CliRunner().invoke(cli, ["sweep", "--help"])
    for option in ("--jobs", "--out", "--fresh", "--no-check", "--no-plots", "--quiet", "--set"):
        assert option in result.output
    assert CliRunner().invoke(cli, ["report", "--help"]).exit_code == 0


def test_sweep_figures_are_figures_with_titles_that_say_what_varied():
    from actstats import run_experiment
    from actstats.sweep_plots import heatmap_figure, profiles_figure, seeds_figure

    s = sweep_of({"name": "fig", "base": SMALL, "grid": {"init": ["xavier", "normal:std=0.01"],
                                                         "act": ["tanh", "relu"]}, "seeds": 2})
    results = {r.name: run_experiment(r.config) for r in s.runs}
    fig = profiles_figure(s, results)
    assert len(fig.axes) == 6  # (pre, post, grad) x (tanh, relu)
    assert "varied: init × act · 2 seeds · 8 runs" in fig._suptitle.get_text()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["init=xavier", "init=normal:std=0.01",
                                                                 "dashed: mean-field prediction"]
    heat = heatmap_figure(s, results)
    assert [ax.get_title() for ax in heat.axes[:2]] == ["z std (pre-activation), last layer",
                                                        "a std, last layer"]
    assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == ["xavier", "normal:std=0.01"]
    # the cell is the geometric mean over the two seeds
    import math

    for ax, tensor in zip(heat.axes[:2], ("pre", "post")):
        stds = [results[r.name].layers[-1][tensor]["std"] for r in s.runs
                if r.config.init == "xavier" and r.config.act == "tanh"]
        cell = ax.images[0].get_array()[0, 0]
        assert cell == pytest.approx(math.sqrt(stds[0] * stds[1]), rel=1e-12)
    band = seeds_figure(s, results)
    assert band is not None and "mean across seeds 0–1" in band._suptitle.get_text()
    assert seeds_figure(sweep_of({"base": SMALL, "grid": {"init": ["he"]}}), results) is None


def test_one_collapsed_run_does_not_flatten_the_std_colours_of_the_others():
    from matplotlib.colors import to_rgba

    from actstats import run_experiment
    from actstats.sweep_plots import STD_UNDER, _std_limits, heatmap_figure

    # the colour range stops 3 decades from the median cell (1 here): all-claims' std of 1e12
    # (C12) and 3e-7 (C3) fall outside, the rest spans 0.045 to 500
    assert _std_limits(np.array([3e-7, 0.045, 0.24, 1.0, 1.4, 22, 500, 1e12])) == (0.045, 500)
    assert _std_limits(np.array([0.5, 2.0])) == (0.5 / 3.2, 2.0 * 3.2)  # under a decade: widened
    s = sweep_of({"name": "h", "base": {**SMALL, "act": "relu"},
                  "grid": {"init": ["normal:std=0.01", "xavier", "he", "lecun"]}})
    results = {r.name: run_experiment(r.config) for r in s.runs}
    std = {r.config.init: results[r.name].layers[-1]["post"]["std"] for r in s.runs}
    # each layer multiplies the std by about 0.01 * sqrt(24 / 2): 4.6 decades below the others
    assert std["normal:std=0.01"] < 1e-3 * min(std["xavier"], std["he"])
    ax = heatmap_figure(s, results).axes[1]  # a std
    image = ax.images[0]
    lo, hi = min(std["xavier"], std["lecun"]), std["he"]  # within a decade: widened by 3.2 each way
    assert hi / lo < 10 and (image.norm.vmin, image.norm.vmax) == pytest.approx((lo / 3.2, hi * 3.2))
    assert image.colorbar.extend == "min"
    assert image.cmap(image.norm(std["normal:std=0.01"])) == to_rgba(STD_UNDER)
    assert [t.get_text() for t in ax.texts][0] == f"{std['normal:std=0.01']:.0e}".replace("e-0", "e-")


def test_runs_of_different_depths_draw_side_by_side():
    """The twin-line check compares whole profiles: runs of 2 and 3 layers are never twins (it once
    broadcast a (3,) against a (2,) profile and stopped the report of configs/all-claims.yaml)."""
    from actstats import run_experiment
    from actstats.sweep_plots import profiles_figure

    s = sweep_of({"name": "depths", "base": {**SMALL, "act": "tanh"},
                  "runs": [{"layers": 2}, {"layers": 3}, {"layers": 3, "init": "lecun"}]})
    results = {r.name: run_experiment(r.config) for r in s.runs}
    fig = profiles_figure(s, results)
    measured = [ln for ln in fig.axes[1].get_lines() if ln.get_linestyle() == "-"]
    assert sorted(len(ln.get_xdata()) for ln in measured) == [2, 3, 3]
    for run, ln in zip(s.runs, measured):
        assert list(ln.get_ydata()) == results[run.name].column("post", "std")


def test_a_run_overflowing_toward_the_float_limit_does_not_break_the_comparison_figure():
    # found by a fresh-eyes pass: beside all-ones ReLU (std ~1e300 by layer 110, inf after) the
    # figure's log axes fell back to 1..10 (matplotlib's margins overflowed) and hid He's line; the
    # legend said "z std 0" where the layers held inf (the std of their finite values, zeros, is 0)
    import warnings

    from actstats import plots, run_experiment
    from actstats.sweep_plots import profiles_figure

    s = sweep_of({"name": "boom", "base": {"act": "relu", "layers": 120, "width": 500, "batch": 20},
                  "grid": {"init": ["ones", "he"]}})
    results = {r.name: run_experiment(r.config) for r in s.runs}
    ones, he = (results[r.name] for r in s.runs)
    z_ones, z_he = np.array(ones.column("pre", "std")), np.array(he.column("pre", "std"))
    inf_layers = np.flatnonzero(np.array(ones.column("pre", "frac_nonfinite")) > 0) + 1
    assert inf_layers.size and np.nanmax(z_ones[np.isfinite(z_ones)]) > 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow inside matplotlib
        fig = profiles_figure(s, results)
        fig.canvas.draw()
    lo, hi = fig.axes[0].get_ylim()
    finite = z_ones[np.isfinite(z_ones) & (z_ones > 0)]
    # both lines inside the axis, up to plots.HUGE (1e307: limits past it overflow matplotlib's ticks)
    assert lo <= min(z_he.min(), finite.min()) and hi == plots.HUGE < finite.max() <= 10 * hi
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts()).replace("\n", " ")
    first, last = int(inf_layers[0]), int(inf_layers[-1])
    assert f"z std inf at layers {first}–{last}" in " ".join(legend.split())
    assert "z std 0" not in legend


def test_jobs_above_the_cores_is_capped_with_one_line_on_stderr(tmp_path, monkeypatch):
    # each worker runs BLAS on one thread, so workers <= cores keeps workers x threads <= cores;
    # more workers would only share the cores (executors.available_cores reads the affinity mask)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    cfg = write(tmp_path, "name: c\nbase: {layers: 2, width: 8, batch: 10}\ngrid: {init: [xavier, he]}\n")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, ["sweep", str(cfg), "--out", str(tmp_path / "r"), "--jobs", "3", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == "--jobs 3 > 1 core(s): using 1 worker(s)"
    assert ", 1 worker(s), " in result.stderr.splitlines()[-1]  # the Wrote line


def test_run_sweep_from_python_caps_jobs_at_the_cores_as_the_cli_does(tmp_path, monkeypatch):
    import actstats.sweep as sweep_module

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # one core
    made = []

    class Recording(sweep_module.LocalExecutor):
        def __init__(self, jobs, *args, **kwargs):
            made.append(jobs)
            super().__init__(jobs, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "LocalExecutor", Recording)
    s = sweep_of({"name": "cap", "base": SMALL, "grid": {"init": ["xavier", "he"]}})
    state = run_sweep(s, tmp_path, jobs=3, plots=False)
    assert made == [1] and set(state.status.values()) == {"done"}
    assert state.warnings == ["--jobs 3 > 1 core(s): using 1 worker(s)"]  # the CLI's line
    with pytest.raises(ConfigError, match=r"^jobs == 0, must be >= 1\.$"):
        run_sweep(s, tmp_path / "zero", jobs=0, plots=False)
    assert not (tmp_path / "zero").exists()  # refused before writing: not even the lock's folders stay


def test_report_names_a_layer_with_inf_rather_than_its_finite_std():
    # ReLU with all-ones weights overflows (float32: 50^30 > 3.4e38): at the last layer half the
    # values are inf and the finite ones are 0, so the std of the finite values is 0 — a collapse to
    # the eye.
    # The report's "layer 1 -> last" column says inf/NaN there (a fresh-eyes finding).
    import actstats
    from actstats.report import _std_span, sig4

    result = actstats.run_experiment({"init": "ones", "act": "relu", "layers": 30, "width": 50, "batch": 10,
                                     "dtype": "float32"})
    last = result.layers[-1]["post"]
    assert last["frac_nonfinite"] > 0
    assert _std_span(result) == f"{sig4(result.layers[0]['post']['std'])} → inf/NaN"
