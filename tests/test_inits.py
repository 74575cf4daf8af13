"""Init schemes against their formulas, on a non-square (300, 700) layer.

Tolerances come from the sample size: n = 210,000 entries; the sample std of i.i.d. values has
relative standard error sqrt((kurtosis - 1) / (4 n)) <= sqrt(2 / (4 n)) = 0.0015 (kurtosis <= 3 for
every distribution here), so 5 standard errors is 0.77%; the sample mean has standard error std/sqrt(n).
"""

import math

import numpy as np
import pytest

from actstats import init_weights
from actstats.errors import ConfigError
from actstats.inits import SCHEMES, calculate_gain, resolve

FAN_IN, FAN_OUT = 300, 700
N = FAN_IN * FAN_OUT
REL_STD = 5 * math.sqrt(2 / (4 * N))
FAN = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": (FAN_IN + FAN_OUT) / 2}


def check(spec, std, mean=0.0, bound=None):
    W = init_weights(spec, FAN_IN, FAN_OUT, seed=1)
    assert W.shape == (FAN_IN, FAN_OUT) and W.dtype == np.float64
    assert W.std() == pytest.approx(std, rel=REL_STD), spec
    assert abs(W.mean() - mean) <= 5 * std / math.sqrt(N) + 1e-15, spec
    if bound is not None:
        lo, hi = bound
        assert W.min() >= lo and W.max() <= hi, spec
        # with 210,000 draws the extremes come within 0.1% of the bounds' span
        assert W.min() - lo < 1e-3 * (hi - lo) and hi - W.max() < 1e-3 * (hi - lo), spec
    return W


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("scale", [1.0, 2.0, 1 / 3])
def test_variance_scaling_every_mode_and_distribution(mode, scale):
    s = scale / FAN[mode]
    base = f"variance_scaling:scale={scale!r},mode={mode}"
    check(base + ",distribution=normal", math.sqrt(s))
    check(base + ",distribution=uniform", math.sqrt(s), bound=(-math.sqrt(3 * s), math.sqrt(3 * s)))
    # truncated normal: N(0, s / 0.8796^2) cut at 2 of its std, so the variance is s again
    cut = 2 * math.sqrt(s) / 0.87962566103423978
    check(base + ",distribution=truncated_normal", math.sqrt(s), bound=(-cut, cut))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_and_he_modes(mode):
    std = math.sqrt(2 / FAN[mode])
    check(f"kaiming_normal:mode={mode}", std)
    check(f"kaiming_uniform:mode={mode}", std, bound=(-math.sqrt(6 / FAN[mode]), math.sqrt(6 / FAN[mode])))
    check(f"he_normal:mode={mode}", std, bound=(-2 * std / 0.87962566103423978, 2 * std / 0.87962566103423978))
    check(f"he_uniform:mode={mode}", std, bound=(-math.sqrt(6 / FAN[mode]), math.sqrt(6 / FAN[mode])))


def test_kaiming_gain_from_nonlinearity_and_slope():
    # PyTorch: std = gain / sqrt(fan), gain(tanh) = 5/3, gain(leaky_relu, a) = sqrt(2 / (1 + a^2))
    check("kaiming_normal:nonlinearity=tanh", (5 / 3) / math.sqrt(FAN_IN))
    check("kaiming_normal:a=0.2", math.sqrt(2 / 1.04) / math.sqrt(FAN_IN))


def test_glorot_xavier_lecun_pytorch_linear():
    avg = (FAN_IN + FAN_OUT) / 2
    check("xavier_normal", math.sqrt(2 / (FAN_IN + FAN_OUT)))
    check("xavier_normal:gain=2", 2 * math.sqrt(2 / (FAN_IN + FAN_OUT)))
    b = math.sqrt(6 / (FAN_IN + FAN_OUT))
    check("xavier_uniform", b / math.sqrt(3), bound=(-b, b))
    check("glorot_uniform", b / math.sqrt(3), bound=(-b, b))
    check("glorot_normal", math.sqrt(1 / avg))
    check("lecun_normal", math.sqrt(1 / FAN_IN))
    check("lecun_uniform", math.sqrt(1 / FAN_IN), bound=(-math.sqrt(3 / FAN_IN), math.sqrt(3 / FAN_IN)))
    b = 1 / math.sqrt(FAN_IN)
    check("pytorch_linear", b / math.sqrt(3), bound=(-b, b))


def test_aliases():
    for alias, target in [("xavier", "xavier_normal"), ("he", "kaiming_normal"),
                          ("kaiming", "kaiming_normal"), ("lecun", "lecun_normal")]:
        assert np.array_equal(init_weights(alias, 30, 70, seed=3), init_weights(target, 30, 70, seed=3))


def test_plain_distributions_and_constants():
    check("normal:std=0.01", 0.01)
    check("normal:mean=0.5,std=2", 2.0, mean=0.5)
    check("uniform:low=-0.2,high=0.6", 0.8 / math.sqrt(12), mean=0.2, bound=(-0.2, 0.6))
    check("truncated_normal:std=0.5", 0.5 * 0.87962566103423978, bound=(-1.0, 1.0))
    assert np.all(init_weights("zeros", 3, 4) == 0)
    assert np.all(init_weights("ones", 3, 4) == 1)
    assert np.all(init_weights("constant:value=0.5", 3, 4) == 0.5)


@pytest.mark.parametrize("shape", [(300, 700), (700, 300), (50, 50)])
def test_orthogonal_is_semi_orthogonal(shape):
    W = init_weights("orthogonal:gain=1.5", *shape, seed=2)
    small = min(shape)
    gram = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(small), atol=1e-12)
    # the mean square entry is then exactly gain^2 * min / (fan_in * fan_out) = gain^2 / max
    assert np.mean(W**2) == pytest.approx(1.5**2 / max(shape), rel=1e-12)


def test_moments_match_formula_for_every_scheme():
    for name, scheme in SCHEMES.items():
        spec = "constant:value=0.25" if name == "constant" else name
        init = resolve(spec)
        mean, var = init.moments(FAN_IN, FAN_OUT)
        W = init_weights(spec, FAN_IN, FAN_OUT, seed=4)
        assert W.std() == pytest.approx(math.sqrt(var), rel=REL_STD, abs=1e-15), name
        lo, hi = init.bounds(FAN_IN, FAN_OUT)
        assert lo <= W.min() and W.max() <= hi, name


def test_calculate_gain_matches_pytorch_table():
    assert calculate_gain("linear") == 1 and calculate_gain("sigmoid") == 1
    assert calculate_gain("tanh") == pytest.approx(5 / 3)
    assert calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert calculate_gain("selu") == 0.75


def test_seed_and_dtype():
    a = init_weights("he", 40, 60, seed=7)
    assert np.array_equal(a, init_weights("he", 40, 60, seed=7))
    assert not np.array_equal(a, init_weights("he", 40, 60, seed=8))
    f32 = init_weights("he", 40, 60, seed=7, dtype=np.float32)
    assert f32.dtype == np.float32 and np.array_equal(f32, a.astype(np.float32))


def test_canonical_specs():
    assert resolve("normal:std=1.0").spec == "normal"  # a default is dropped
    assert resolve("normal:std=1e-2").spec == "normal:std=0.01"
    assert resolve({"name": "normal", "std": 0.01}).spec == "normal:std=0.01"
    assert resolve("KAIMING_NORMAL:mode=fan_out").spec == "kaiming_normal:mode=fan_out"


@pytest.mark.parametrize("spec, message", [
    ("xaviar", "unknown init 'xaviar'; did you mean 'xavier'?"),
    ("normal:sdt=1", "init 'normal' has no parameter 'sdt'; did you mean 'std'?"),
    ("normal:std", "malformed init spec 'normal:std': 'std' is not key=value."),
    ("normal:std=abc!", "init spec 'normal:std=abc!', key 'std': value 'abc!' is neither a number nor a word."),
    ("normal:std=-1", "init 'normal': std == -1, must be >= 0."),
    ("normal:std=nan", "init 'normal': std == nan, must be finite."),
    ("constant", "init 'constant' needs value=..., e.g. 'constant:value=0.5'."),
    ("kaiming_normal:mode=fan_middle", "init 'kaiming_normal': mode 'fan_middle' is not valid; did you mean 'fan_in'?"),
    ("zeros:value=1", "init 'zeros' has no parameter 'value'; it takes no parameters."),
    ("uniform:low=1,high=0", "init 'uniform': low == 1 > high == 0."),
    (":std=1", "malformed init spec ':std=1': missing name before ':'."),
    ("", "empty init spec: expected NAME[:key=value,...]."),
    ("  ", "empty init spec: expected NAME[:key=value,...]."),
    ("normal:std=1,std=2", "malformed init spec 'normal:std=1,std=2': key 'std' given twice."),
])
def test_spec_errors(spec, message):
    with pytest.raises(ConfigError) as err:
        resolve(spec)
    assert str(err.value) == message


def test_fan_errors():
    with pytest.raises(ConfigError, match=r"^fan_in == 0, must be an integer >= 1\.$"):
        init_weights("he", 0, 5)
