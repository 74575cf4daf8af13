"""Hostile input: whatever is typed or written, the answer is a result or one clear error line.

Property-based (hypothesis) over the init/activation spec parser, the run-config loader and the CLI
options; plus the shapes of bad YAML a user actually writes.
"""

import math

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actstats import RunConfig, activations, inits
from actstats.cli import cli
from actstats.errors import ConfigError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that looks like a spec: names, separators, numbers, unicode and control characters
spec_alphabet = st.sampled_from(list("normalxavierhekaimingstd=,:._-+eE0123456789 \t\n") +
                                ["é", "∞", "ñ", "😀", "\x00", "\u200b", "nan", "inf", "1e309", "-"])
spec_text = st.lists(spec_alphabet, max_size=40).map("".join)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message.strip() and "Traceback" not in message


REFUSED = object()  # what answer_or_reason returns for a refusal (None may be a real answer)


def answer_or_reason(call, *args, starts="", **kwargs):
    """call(*args, **kwargs)'s answer, or REFUSED when it raised a ConfigError whose message is one
    line starting with `starts`; any other exception, or a worse message, fails the test."""
    try:
        return call(*args, **kwargs)
    except ConfigError as exc:
        assert one_line(str(exc)) and str(exc).startswith(starts)
        return REFUSED


@SETTINGS
@given(spec_text)
@example("normal:std=1e309")
@example("normal:std=-0")
@example("normal:std=1e-320")
@example("kaiming_normal:a=nan")
@example("normal:std=\x00")
@example("uniform:low=-1e308,high=1e308")
def test_init_spec_parser_answers_or_says_why(text):
    init = answer_or_reason(inits.resolve, text)
    if init is REFUSED:
        return
    # what parses must print back to a spec that parses to the same init, and sample without error
    again = inits.resolve(init.spec)
    assert again == init
    W = init.sample((3, 4), __import__("numpy").random.default_rng(0), 3, 4)
    assert W.shape == (3, 4)


@SETTINGS
@given(spec_text)
def test_activation_spec_parser_answers_or_says_why(text):
    act = answer_or_reason(activations.get, text)
    if act is REFUSED:
        return
    assert activations.get(act.name).name == act.name


yaml_scalars = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
config_keys = st.sampled_from(["init", "bias_init", "act", "layers", "width", "input_dim", "batch",
                               "input", "dtype", "seed", "bins", "chunk_size", "backward", "widht",
                               "", "layers ", "ä"])


@SETTINGS
@given(st.dictionaries(config_keys, yaml_scalars, max_size=5))
def test_run_config_loader_answers_or_says_why(data):
    config = answer_or_reason(RunConfig.from_dict, data, where="x.yaml")
    if config is REFUSED:
        return
    assert config.layers >= 1 and min(config.widths) >= 1 and config.batch >= 1
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text, message", [
    ("", None),  # an empty file is an empty config: all defaults
    ("layers: [1, 2", "line 1, column 14: YAML syntax error:"),
    ("layers: 3\nlayers: 4\n", "duplicate key 'layers'"),
    ("- 1\n- 2\n", "expected a mapping of run options at the top level."),
    ("layers: .nan\n", "layers must be an integer, got nan."),
    ("layers: .inf\n", "layers must be an integer, got inf."),
    ("init: {name: normal, std: .nan}\n", "init 'normal': std == nan, must be finite."),
    ("width: {a: 1}\n", "width must be an integer, got dict."),
    ("act: [tanh]\n", "activation spec must be a string such as"),
    ("layers: 1e400\n", "layers must be an integer, got '1e400'."),
    ("seed: -1\n", "seed == -1, must be >= 0."),
    ("batch: 99999999999999999999999\n", "batch == 99999999999999999999999, must be <= 100000000."),
])
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--config", str(path), "--no-save", "--layers", "2",
                                 "--width", "4"] if message is None else
                           ["run", "--config", str(path), "--no-save"], catch_exceptions=False)
    if message is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert one_line(result.output) and result.output.startswith("Error: ")
    assert message in result.output


def test_binary_file_and_directory_as_config(tmp_path):
    runner = CliRunner()
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(bytes(range(256)))
    out = runner.invoke(cli, ["run", "--config", str(binary)], catch_exceptions=False)
    assert out.exit_code == 2 and out.output == f"Error: {binary}: not a text file (not UTF-8).\n"
    out = runner.invoke(cli, ["run", "--config", str(tmp_path)], catch_exceptions=False)
    assert out.exit_code == 2 and one_line(out.output)


cli_values = st.one_of(st.integers(min_value=-10**20, max_value=10**20).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.text(max_size=10), st.sampled_from(["0", "-1", "1e9", "10,0", ",", "1,,2", "∞"]))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["--layers", "--width", "--batch", "--input-dim", "--seed", "--bins",
                        "--chunk-size", "--init", "--act", "--input", "--dtype", "--bias-init"]),
       cli_values)
def test_cli_options_answer_or_say_why(option, value):
    from actstats.config import MAXIMUM

    runner = CliRunner()
    # keep anything that parses tiny so the property test stays fast: a valid but huge batch is a
    # long run, not a hang, so cap it for this test
    base = ["run", "--no-save", "--quiet", "--layers", "2", "--width", "3", "--batch", "4"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MAXIMUM, "batch", 10_000)
        result = runner.invoke(cli, [*base, option, value], catch_exceptions=False)
    if result.exit_code == 0:
        assert result.output == ""
    else:
        assert result.exit_code == 2, (option, value, result.output)
        assert one_line(result.output) and result.output.startswith("Error: ")


def test_huge_but_valid_numbers_are_refused_before_work():
    runner = CliRunner()
    result = runner.invoke(cli, ["run", "--no-save", "--width", str(10**12)], catch_exceptions=False)
    assert result.exit_code == 2 and "this run needs an estimated" in result.output
    result = runner.invoke(cli, ["run", "--no-save", "--batch", str(10**9)], catch_exceptions=False)
    assert result.exit_code == 2 and result.output == "Error: batch == 1000000000, must be <= 100000000.\n"


# --- sweep files ---------------------------------------------------------------------------------------

run_options = st.dictionaries(config_keys, yaml_scalars, max_size=3)
sweep_values = st.one_of(yaml_scalars, run_options, st.lists(run_options, max_size=2),
                         st.dictionaries(config_keys, st.lists(yaml_scalars, max_size=3), max_size=2),
                         st.lists(st.dictionaries(st.sampled_from(["claim", "check", "where", "stat",
                                                                   "lt", "verdict"]),
                                                  yaml_scalars, max_size=3), max_size=2))
sweep_keys = st.sampled_from(["name", "description", "base", "grid", "runs", "seeds", "expect", "gird",
                              "seed", "", "ñame"])


@SETTINGS
@given(st.dictionaries(sweep_keys, sweep_values, max_size=5))
def test_sweep_file_loader_answers_or_says_why(data):
    from actstats.sweep import SweepConfig

    sweep = answer_or_reason(SweepConfig.from_dict, data, where="s.yaml", starts="s.yaml")
    if sweep is REFUSED:
        return
    assert sweep.runs and len({r.name for r in sweep.runs}) == len(sweep.runs)


@pytest.mark.parametrize("text, message", [
    ("", "F: empty file; a sweep needs grid: or runs:."),
    ("name: a\nname: b\ngrid: {init: [he]}\n", "F: line 2, column 1: YAML error: duplicate key 'name'."),
    ("base: {layers: .nan}\ngrid: {init: [he]}\n", "F: base: layers must be an integer, got nan."),
    ("grid: {init: [he]}\nseeds: .inf\n", "F: seeds: expected a count or a list of seeds, got float."),
    ("grid: {init: [he]}\nseeds: 100000000000000000000000000000\n",
     "F: seeds == 100000000000000000000000000000, must be <= 100000."),
    ("grid: {layers: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], batch: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\nseeds: 1001\n",
     "F: 100100 runs (runs: entries x grid points x seeds); a sweep has at most 100000."),
    ("grid: {init: [he]}\nseeds: -3\n", "F: seeds == -3, must be >= 1."),
    ("name: ñ😀\ngrid: {init: [he]}\n", "F: name: expected a folder name (letters, digits, . _ + -), got 'ñ😀'."),
    ("grid: {base: {layers: 3}}\n", "F: grid: unknown run option 'base'; valid values: act, backward, batch, "
     "bias_init, bins, chunk_size, dtype, init, input, input_dim, layers, seed, width."),
    ("runs: [[1]]\n", "F: runs[0]: expected a mapping, got list."),
    ("grid: {width: [1e400]}\n", "F: grid.width[0]: width must be an integer, got '1e400'."),
    ("grid: {init: [he]}\nbase: {layers: 100000000000000000000}\n",
     "F: base: layers == 100000000000000000000, must be <= 10000."),
    ("grid: {init: [he]}\nexpect: [{claim: x, check: {stat: post.std, layer: 1, lt: .nan}}]\n",
     "F: expect[0].check.lt: expected a finite number, got nan."),
    ("grid: {init: [he]}\nexpect: [{claim: x, check: {stat: post.std, layer: 1, gt: -.inf}}]\n",
     "F: expect[0].check.gt: expected a finite number, got -inf."),
])
def test_bad_sweep_files_are_one_line_exit_2_and_write_nothing(tmp_path, text, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--out", str(tmp_path / "out"), "--no-plots"],
                                catch_exceptions=False)
    assert (result.exit_code, result.output) == (2, "Error: " + message.replace("F: ", f"{path}: ", 1) + "\n")
    assert not (tmp_path / "out").exists()


def test_binary_file_and_directory_as_sweep_file(tmp_path):
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(bytes(range(256)))
    out = CliRunner().invoke(cli, ["sweep", str(binary)], catch_exceptions=False)
    assert (out.exit_code, out.output) == (2, f"Error: {binary}: not a text file (not UTF-8).\n")
    out = CliRunner().invoke(cli, ["sweep", str(tmp_path)], catch_exceptions=False)
    assert (out.exit_code, out.output) == (2, f"Error: Invalid value for 'FILE': File '{tmp_path}' is a directory.\n")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=15), min_size=1, max_size=3))
def test_set_overrides_answer_or_say_why(pairs):
    from actstats.sweep import parse_overrides

    answer_or_reason(parse_overrides, pairs, starts="--set")
