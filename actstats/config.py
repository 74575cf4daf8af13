"""RunConfig: one experiment, frozen and validated; from CLI options, a dict or a YAML file.

Every field that changes a number is here, so a config and its seed give the same numbers bit for
bit. Specs are stored in canonical form (``normal:std=0.01``), and ``to_dict`` round-trips through
YAML: the ``config.yaml`` of a results folder re-runs with ``actstats run --config``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from . import activations, inits
from .errors import ConfigError, did_you_mean, show

INPUTS = ("normal", "uniform", "half")
DTYPES = ("float64", "float32")
# beyond these a value is a typo, not an experiment (10^8 samples of even a tiny net take minutes)
MAXIMUM = {"layers": 10_000, "batch": 10**8, "bins": 100_000, "seed": 2**63 - 1}
# one bin cannot hold values of both signs on the adaptive grid (its bins are aligned on 0)
MINIMUM = {"seed": 0, "bins": 2}
INPUT_SECOND_MOMENT = {"normal": 1.0, "uniform": 1.0 / 3, "half": 0.5}  # E[x^2]


@dataclass(frozen=True)
class RunConfig:
    init: str = "xavier"              # weight init spec, NAME[:key=value,...]
    bias_init: str = "zeros"          # bias init spec, same grammar
    act: str = "tanh"                 # activation spec, e.g. relu or leaky_relu:negative_slope=0.2
    layers: int = 10                  # number of layers L
    width: Any = 500                  # units per layer: one int, or a tuple of L ints
    input_dim: int | None = None      # input units; None: the first layer's width
    batch: int = 1000                 # samples pushed through the net
    input: str = "normal"             # normal N(0,1) | uniform U(-1,1) | half (half 1, half 0: C11)
    dtype: str = "float64"            # float64 | float32
    seed: int = 0                     # seeds weights, biases, input and loss projection
    bins: int = 50                    # histogram bins
    chunk_size: int | None = None     # rows per chunk; None: automatic (bounded memory)
    backward: bool = True             # also back-propagate and record gradients

    @property
    def widths(self) -> tuple[int, ...]:
        return self.width if isinstance(self.width, tuple) else (self.width,) * self.layers

    @property
    def dims(self) -> tuple[int, ...]:
        """(input_dim, width_1, ..., width_L): layer l maps dims[l-1] units to dims[l]."""
        return (self.input_dim or self.widths[0], *self.widths)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["width"] = list(self.width) if isinstance(self.width, tuple) else self.width
        return d

    def identity(self) -> dict:
        """The fields that decide the numbers (chunk size only reorders float sums)."""
        d = self.to_dict()
        d.pop("chunk_size")
        return d

    def replace(self, **changes) -> "RunConfig":
        return RunConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: Mapping, where: str | None = None) -> "RunConfig":
        """Validate and normalise; unknown keys, wrong types and bad values are ConfigErrors."""
        at = f"{where}: " if where else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{at}expected a mapping of run options, got {type(data).__name__}.")
        for key in data:
            if key not in OPTIONS:
                raise ConfigError(f"{at}unknown key '{show(key)}'{did_you_mean(str(key), OPTIONS)}")
        d = {k: v for k, v in data.items() if v is not None or k in ("input_dim", "chunk_size")}
        out: dict[str, Any] = {}
        for key in ("layers", "batch", "seed", "bins"):
            if key in d:
                out[key] = _int(d[key], key, at, minimum=MINIMUM.get(key, 1), maximum=MAXIMUM.get(key))
        for key in ("input_dim", "chunk_size"):
            if d.get(key) is not None:
                out[key] = _int(d[key], key, at, minimum=1)
        if "width" in d:
            width = d["width"]
            if isinstance(width, str) and "," in width:
                width = [w for w in width.split(",")]
            if isinstance(width, (list, tuple)):
                if not width:
                    raise ConfigError(f"{at}width is an empty list, must name >= 1 width.")
                ws = tuple(_int(w, "width", at, minimum=1) for w in width)
                if "layers" in out and out["layers"] != len(ws) and len(ws) > 1:
                    raise ConfigError(
                        f"{at}width lists {len(ws)} layers but layers == {out['layers']}; "
                        "give one width per layer, or one width for all.")
                if len(ws) == 1:
                    out["width"] = ws[0]
                else:
                    out["width"], out["layers"] = ws, len(ws)
            else:
                out["width"] = _int(width, "width", at, minimum=1)
        for key, options in (("input", INPUTS), ("dtype", DTYPES)):
            if key in d:
                val = d[key]
                if not isinstance(val, str) or val not in options:
                    raise ConfigError(f"{at}{key} '{show(val)}' is not valid; valid values: "
                                      f"{', '.join(sorted(options))}.")
                out[key] = val
        if "backward" in d:
            if not isinstance(d["backward"], bool):
                raise ConfigError(f"{at}backward must be true or false, got {d['backward']!r}.")
            out["backward"] = d["backward"]
        out["init"] = inits.resolve(d.get("init", cls.init)).spec
        out["bias_init"] = inits.resolve(d.get("bias_init", cls.bias_init), "bias init").spec
        if inits.resolve(out["bias_init"]).scheme == "orthogonal":
            raise ConfigError(f"{at}bias init 'orthogonal' needs a matrix; use zeros or a distribution.")
        out["act"] = activations.get(d.get("act", cls.act)).name
        return cls(**out)

    @classmethod
    def from_yaml(cls, path, overrides: Mapping | None = None) -> "RunConfig":
        data = load_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping of run options at the top level.")
        return cls.from_dict({**data, **(overrides or {})}, where=str(path))


OPTIONS = tuple(f.name for f in fields(RunConfig))  # the run options, in field order


def _int(value, key: str, at: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{at}{key} must be an integer, got {value!r}.")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{at}{key} must be an integer, got '{show(value)}'.") from None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ConfigError(f"{at}{key} must be an integer, got {value!r}.")
        value = int(value)
    if not isinstance(value, int):
        raise ConfigError(f"{at}{key} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ConfigError(f"{key} == {value}, must be >= {minimum}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} == {value}, must be <= {maximum}.")
    return value


def _loader():
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let the default constructor say so
                break
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{show(key)}'", mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def load_yaml(path) -> Any:
    """Parse a YAML file; syntax errors and duplicate keys name the file and line."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a YAML file.")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (not UTF-8).") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror}).") from None
    if "\x00" in text:
        raise ConfigError(f"{p}: not a text file (it holds NUL bytes).")
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        what = "YAML syntax error" if not str(exc.problem).startswith("duplicate key") else "YAML error"
        raise ConfigError(f"{p}:{line} {what}: {show(exc.problem)}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: YAML error: {show(exc)}.") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply.") from None
