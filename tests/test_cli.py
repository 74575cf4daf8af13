"""The command line, driven through click's CliRunner: exit codes, exact error lines, files."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from actstats.cli import cli

SMALL = ["--layers", "3", "--width", "20", "--batch", "32"]


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, args):
    return runner.invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["run"], ["inits"], ["activations"]])
def test_help_for_every_command(runner, command):
    result = invoke(runner, [*command, "--help"])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    if command == ["run"]:
        for option in ("--init", "--bias-init", "--act", "--layers", "--width", "--input-dim", "--batch",
                       "--input", "--dtype", "--seed", "--bins", "--out", "--name", "--no-plots",
                       "--json", "--quiet", "--config", "--chunk-size"):
            assert option in result.output


@pytest.mark.parametrize("args, message", [
    (["--layers", "0"], "Error: layers == 0, must be >= 1."),
    (["--width", "0"], "Error: width == 0, must be >= 1."),
    (["--batch", "-5"], "Error: batch == -5, must be >= 1."),
    (["--bins", "1"], "Error: bins == 1, must be >= 2."),  # once an endless loop (fresh-eyes pass)
    (["--init", "xaviar"], "Error: unknown init 'xaviar'; did you mean 'xavier'?"),
    (["--act", "tanhh"], "Error: unknown activation 'tanhh'; did you mean 'tanh'?"),
    (["--init", "normal:std"], "Error: malformed init spec 'normal:std': 'std' is not key=value."),
    (["--init", "normal:sdt=1"], "Error: init 'normal' has no parameter 'sdt'; did you mean 'std'?"),
    (["--bias-init", "orthogonal"], "Error: bias init 'orthogonal' needs a matrix; use zeros or a distribution."),
    (["--input", "gauss"], "Error: input 'gauss' is not valid; valid values: half, normal, uniform."),
    (["--dtype", "float16"], "Error: dtype 'float16' is not valid; valid values: float32, float64."),
    (["--layers", "abc"], "Error: Invalid value for '--layers': 'abc' is not a valid integer."),
    (["--width", "10,20", "--layers", "3"],
     "Error: width lists 2 layers but layers == 3; give one width per layer, or one width for all."),
])
def test_bad_input_is_one_line_and_exit_2(runner, tmp_path, args, message):
    result = invoke(runner, ["run", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert result.output == message + "\n"
    assert not any(tmp_path.iterdir())  # nothing written


def test_memory_refusal_says_estimate_and_what_to_lower(runner, tmp_path):
    result = invoke(runner, ["run", "--out", str(tmp_path), "--width", "200000", "--layers", "100"])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line
    assert line.startswith("Error: this run needs an estimated ")
    assert line.endswith("is available; lower --width or --layers, or use --dtype float32.")


def test_run_writes_results_and_prints_table(runner, tmp_path):
    result = invoke(runner, ["run", "--init", "normal:std=0.01", "--act", "tanh", *SMALL,
                             "--out", str(tmp_path), "--no-plots"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "tanh_normal-std0.01_L3_w20_n32"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml", "histograms.npz", "stats.csv", "stats.json"]
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["config"]["init"] == "normal:std=0.01"
    assert "Diagnosis:" in result.output and "activations collapse toward 0" in result.output
    # the table shows layer 1's post std as stored
    assert f"{stats['layers'][0]['post']['std']:.3g}" in result.output


def test_json_prints_only_json(runner, tmp_path):
    result = invoke(runner, ["run", *SMALL, "--json", "--no-save"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert len(data["layers"]) == 3 and data["diagnosis"]["verdict"]
    assert not any(tmp_path.iterdir())


def test_quiet_prints_nothing(runner, tmp_path):
    result = invoke(runner, ["run", *SMALL, "--quiet", "--out", str(tmp_path), "--no-plots"])
    assert result.exit_code == 0 and result.output == ""
    assert len(list(tmp_path.iterdir())) == 1


def test_config_yaml_reruns_the_same_numbers(runner, tmp_path):
    invoke(runner, ["run", *SMALL, "--init", "he", "--act", "relu", "--out", str(tmp_path), "--name", "a",
                    "--no-plots", "--quiet"])
    invoke(runner, ["run", "--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path),
                    "--name", "b", "--no-plots", "--quiet"])
    a = json.loads((tmp_path / "a" / "stats.json").read_text())
    b = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert a["layers"] == b["layers"] and a["config"] == b["config"]


def test_named_folder_of_a_different_run_is_not_overwritten(runner, tmp_path):
    base = ["run", *SMALL, "--out", str(tmp_path), "--name", "mine", "--no-plots", "--quiet"]
    assert invoke(runner, base).exit_code == 0
    before = (tmp_path / "mine" / "stats.json").read_text()
    result = invoke(runner, [*base, "--init", "he"])
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path / 'mine'} holds a different run (init xavier vs he); "
                             "choose another --name or pass --overwrite.\n")
    assert (tmp_path / "mine" / "stats.json").read_text() == before
    assert invoke(runner, [*base, "--init", "he", "--overwrite"]).exit_code == 0
    assert json.loads((tmp_path / "mine" / "stats.json").read_text())["config"]["init"] == "he"


def test_default_name_of_a_different_run_gets_a_suffix(runner, tmp_path):
    from actstats import RunConfig
    from actstats.experiment import config_hash, default_name

    base = ["run", *SMALL, "--out", str(tmp_path), "--no-plots", "--quiet"]
    invoke(runner, base)
    config = RunConfig.from_dict({"layers": 3, "width": 20, "batch": 32})
    folder = tmp_path / default_name(config)
    # plant a different run's result under the name this config derives
    data = json.loads((folder / "stats.json").read_text())
    data["config"]["seed"] = 99
    (folder / "stats.json").write_text(json.dumps(data))
    invoke(runner, base)
    assert (tmp_path / f"{default_name(config)}-{config_hash(config)}" / "stats.json").exists()


@pytest.mark.parametrize("name", [".", "..", "", "../escape", "a/b"])
def test_name_is_a_folder_name_not_a_path(runner, tmp_path, name):
    # --name . replaced the whole --out folder (a sweep and other runs with it), ../x wrote outside it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = invoke(runner, ["run", *SMALL, "--out", str(tmp_path), "--name", name, "--no-plots", "--quiet"])
    assert result.exit_code == 2
    assert result.output == f"Error: --name {name!r} must be a folder name (no '/', not '.' or '..').\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_folder_that_holds_no_result_is_never_replaced(runner, tmp_path):
    # a sweep's folder or the user's own files under the --name asked for: refused, left as they
    # were (it used to be replaced by the run's files without a word, --overwrite or not)
    sweep = tmp_path / "tanh-scale"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text("grid: {}\n")
    for flags in ([], ["--overwrite"]):
        result = invoke(runner, ["run", *SMALL, "--out", str(tmp_path), "--name", "tanh-scale", "--no-plots",
                                 "--quiet", *flags])
        assert result.exit_code == 2
        assert result.output == (f"Error: {sweep} exists and holds no actstats result (no stats.json); "
                                 "choose another --name.\n")
        assert [p.name for p in sweep.iterdir()] == ["sweep.yaml"]
    # an empty folder holds nothing to lose: the run goes there
    (tmp_path / "empty").mkdir()
    assert invoke(runner, ["run", *SMALL, "--out", str(tmp_path), "--name", "empty", "--no-plots",
                           "--quiet"]).exit_code == 0
    assert (tmp_path / "empty" / "stats.json").is_file()


def test_default_name_taken_by_other_files_gets_a_suffix(runner, tmp_path):
    from actstats import RunConfig
    from actstats.experiment import config_hash, default_name

    config = RunConfig.from_dict({"layers": 3, "width": 20, "batch": 32})
    taken = tmp_path / default_name(config)
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert invoke(runner, ["run", *SMALL, "--out", str(tmp_path), "--no-plots", "--quiet"]).exit_code == 0
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert (tmp_path / f"{default_name(config)}-{config_hash(config)}" / "stats.json").is_file()


def test_unwritable_output_is_a_failure_with_exit_1(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke(runner, ["run", *SMALL, "--out", str(blocker / "sub"), "--no-plots"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write results to {blocker / 'sub'}")


def test_inits_lists_every_scheme_and_the_two_xaviers(runner):
    from actstats.inits import SCHEMES

    result = runner.invoke(cli, ["inits"], terminal_width=200)
    assert result.exit_code == 0
    for name in SCHEMES:
        assert name in result.output
    assert "Two meanings of 'Xavier'" in result.output
    one = invoke(runner, ["inits", "he"])
    assert "kaiming_normal  (alias 'he')" in one.output and "std 0.06325" in one.output  # sqrt(2/500)
    bad = invoke(runner, ["inits", "xaviar"])
    assert bad.exit_code == 2 and bad.output == "Error: unknown init 'xaviar'; did you mean 'xavier'?\n"


def test_python_dash_m_and_no_traceback_on_missing_config():
    out = subprocess.run([sys.executable, "-m", "actstats", "run", "--config", "/nonexistent.yaml"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr == "Error: /nonexistent.yaml: no such file.\n"
