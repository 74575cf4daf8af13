"""Sweep files: a YAML file of many runs -> a validated, expanded plan (``SweepConfig``).

A sweep file (README "Sweep files" has the full format)::

    name: tanh-scale
    base: {act: tanh, layers: 10}              # run options shared by every run
    grid: {init: [xavier, "normal:std=1"]}     # cartesian product of lists
    runs: [{width: 100}, {width: 500}]         # explicit runs; combined with every grid point
    seeds: 3                                   # repeat every run for seeds 0, 1, 2 (or a list)
    expect: [...]                              # claims, see claims.py

Everything is validated before any run starts: a ``ConfigError`` of one line that names the file and
the key path (``configs/x.yaml: grid.layers: expected a list, got int.``). Each run gets a readable,
unique, deterministic folder name from the fields that vary (``init=normal-std0.01_act=tanh_seed=0``).

Only the standard library is imported at module level (see sweep.py: a spawned worker imports this).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, did_you_mean
from .errors import show as printable

MAX_RUNS = 100_000  # runs in one sweep: more is a typo (seeds: 1e9), not a plan
SWEEP_KEYS = ("name", "description", "base", "grid", "runs", "seeds", "expect")


def identity_key(config) -> str:
    """A hashable key of the fields that decide a run's numbers: equal keys, the same run."""
    return json.dumps(config.identity(), sort_keys=True, default=str)


def _type(value) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "bool", int: "int", float: "float",
            type(None): "nothing"}.get(type(value), type(value).__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text.replace("=", "")).strip("-") or "x"


def show(value) -> str:
    """A config value as people write it: widths 100,200; None as none."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def canonical(key: str, value, at: str):
    """The normalised value of one run option (``he`` stays ``he``, ``normal:std=1.0`` becomes
    ``normal``), so that a ``where:`` matches the runs whatever the spelling."""
    from .config import RunConfig

    try:
        return RunConfig.from_dict({key: value}).to_dict()[key]
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None


@dataclass(frozen=True)
class PlannedRun:
    index: int
    name: str                     # folder name inside the sweep folder
    config: Any                   # RunConfig
    varied: dict                  # field -> value as written (text), for the fields that vary
    label: str                    # for legends and tables, e.g. "init=xavier, act=relu"
    entry: str | None = None      # the name of its runs: entry, if it has one


@dataclass(frozen=True)
class SweepConfig:
    name: str
    runs: tuple[PlannedRun, ...]
    axes: tuple[str, ...] = ()        # grid keys with more than one value, in file order
    varied: tuple[str, ...] = ()      # every field that differs across runs, in display order
    seeds: tuple[int, ...] = ()
    claims: tuple = ()                # claims.Claim
    description: str = ""
    spec: dict = field(default_factory=dict)   # the validated file (overrides applied): sweep.yaml
    source: str = ""

    @property
    def fixed(self) -> dict:
        """The run options every run shares and that differ from the defaults."""
        from .config import RunConfig

        if not self.runs:
            return {}
        first = self.runs[0].config.to_dict()
        default = RunConfig().to_dict()
        base = self.spec.get("base") or {}  # as the file writes it, where it does
        return {k: base.get(k, v) for k, v in first.items()
                if k not in self.varied and (k in base or v != default[k])}

    def by_name(self) -> dict[str, PlannedRun]:
        return {r.name: r for r in self.runs}

    @classmethod
    def from_yaml(cls, path, overrides: Mapping | None = None) -> "SweepConfig":
        from .config import load_yaml

        data = load_yaml(path)
        if data is None:
            raise ConfigError(f"{path}: empty file; a sweep needs grid: or runs:.")
        return cls.from_dict(data, where=str(path), overrides=overrides, default_name=Path(path).stem)

    @classmethod
    def from_dict(cls, data, where: str | None = None, overrides: Mapping | None = None,
                  default_name: str = "sweep") -> "SweepConfig":
        return _parse(data, where or "sweep", overrides or {}, default_name)


def is_sweep_mapping(data) -> bool:
    return isinstance(data, Mapping) and any(k in data for k in ("base", "grid", "runs", "seeds", "expect"))


# --- parsing -------------------------------------------------------------------------------------------

def _mapping(value, at: str, what: str = "a mapping") -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{at}: expected {what}, got {_type(value)}.")
    return dict(value)


def _run_options(d: Mapping, at: str, extra: tuple = ()) -> None:
    """Unknown keys of a mapping of run options, with did-you-mean."""
    from .config import OPTIONS as names

    for key in d:
        if key not in names and key not in extra:
            hint = did_you_mean(str(key), [*names, *extra])
            raise ConfigError(f"{at}: unknown run option '{key}'{hint}")


def _options(data: Mapping, at: str):
    """Validate a mapping of run options on its own, prefixing errors with the key path."""
    from .config import RunConfig

    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None


def _valid(options) -> bool:
    """Whether a mapping of run options makes a valid RunConfig on its own."""
    from .config import RunConfig

    if not isinstance(options, Mapping):
        return False
    try:
        RunConfig.from_dict(options)
    except ConfigError:
        return False
    return True


def apply_overrides(spec: dict, overrides: Mapping, file: str) -> dict:
    """``--set KEY=VALUE``: into base: and into every runs: entry that sets KEY. A grid axis cannot be
    overridden (that would merge its runs); change the file instead."""
    if not overrides:
        return spec
    _run_options(overrides, f"{file}: --set")
    grid = spec.get("grid") if isinstance(spec.get("grid"), Mapping) else {}
    spec = dict(spec)
    for key in overrides:
        if key in grid:
            raise ConfigError(f"{file}: --set {key}: '{key}' is a grid axis; edit grid.{key} instead.")
        if key == "seed" and spec.get("seeds") is not None:
            raise ConfigError(f"{file}: --set seed: the file repeats runs over seeds:; edit seeds: instead.")
    spec["base"] = {**(spec.get("base") or {}), **overrides}
    if isinstance(spec.get("runs"), list):
        spec["runs"] = [{**e, **{k: v for k, v in overrides.items() if k in e}} if isinstance(e, Mapping)
                        else e for e in spec["runs"]]
    return spec


def _parse(data, file: str, overrides: Mapping, default_name: str) -> SweepConfig:
    from .config import RunConfig

    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: expected a mapping with grid: or runs:, got {_type(data)}.")
    from .config import OPTIONS

    run_keys = [k for k in data if k in OPTIONS]
    if run_keys and not any(k in data for k in SWEEP_KEYS) and len(run_keys) == len(data):
        raise ConfigError(f"{file}: this is a run config, not a sweep (no grid: or runs:); run it "
                          f"with 'actstats run --config {file}', or put its options under base: "
                          "and add a grid:.")
    for key in data:
        if key in run_keys:
            raise ConfigError(f"{file}: unknown key '{key}' at the top level; run options go under base:.")
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{file}: unknown key '{key}'{did_you_mean(str(key), SWEEP_KEYS)}")
    if not any(k in data for k in ("grid", "runs")):
        raise ConfigError(f"{file}: a sweep needs grid: (lists of values) or runs: (a list of runs).")
    spec = apply_overrides(dict(data), overrides, file)

    name = spec.get("name", default_name)
    spec = {"name": name, **spec}
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise ConfigError(f"{file}: name: expected a folder name (letters, digits, . _ + -), got {name!r}.")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{file}: description: expected a string, got {_type(description)}.")

    base = _mapping(spec.get("base") or {}, f"{file}: base")
    _run_options(base, f"{file}: base")
    # --set's values are merged into base: before it is validated; when the file's own base: is
    # valid, what fails came from --set, and the error says so
    _options(base, f"{file}: --set" if overrides and _valid(data.get("base") or {}) else f"{file}: base")

    grid: dict = {}
    if "grid" in spec:
        raw = spec["grid"]
        if raw is None or raw == {}:
            raise ConfigError(f"{file}: grid: is empty; give at least one option with a list of values.")
        raw = _mapping(raw, f"{file}: grid", "a mapping of option: [values]")
        _run_options(raw, f"{file}: grid")
        for key, values in raw.items():
            at = f"{file}: grid.{key}"
            if not isinstance(values, list):
                raise ConfigError(f"{at}: expected a list, got {_type(values)}.")
            if not values:
                raise ConfigError(f"{at}: empty list; give at least one value.")
            for i, v in enumerate(values):
                _options({key: v}, f"{at}[{i}]")
            grid[key] = values

    entries: list[dict] = [{}]
    if "runs" in spec:
        raw = spec["runs"]
        if not isinstance(raw, list):
            raise ConfigError(f"{file}: runs: expected a list of mappings, got {_type(raw)}.")
        if not raw:
            raise ConfigError(f"{file}: runs: empty list; give at least one run.")
        entries = []
        for i, e in enumerate(raw):
            at = f"{file}: runs[{i}]"
            e = _mapping(e if e is not None else {}, at)
            _run_options(e, at, extra=("name",))
            if "name" in e and (not isinstance(e["name"], str)
                                or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", e["name"])):
                raise ConfigError(f"{at}.name: expected a folder name (letters, digits, . _ + = -), "
                                  f"got {e['name']!r}.")
            for key in e:
                if key in grid:
                    raise ConfigError(f"{at}: '{key}' is also a grid axis; set it in one place.")
            _options({k: v for k, v in e.items() if k != "name"}, at)
            entries.append(e)
        names = [e["name"] for e in entries if "name" in e]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ConfigError(f"{file}: runs: two entries are named '{dup}'.")

    seeds: tuple[int, ...] = ()
    if spec.get("seeds") is not None:
        raw = spec["seeds"]
        if isinstance(raw, bool) or not isinstance(raw, (int, list)):
            raise ConfigError(f"{file}: seeds: expected a count or a list of seeds, got {_type(raw)}.")
        if isinstance(raw, int):
            if raw < 1:
                raise ConfigError(f"{file}: seeds == {raw}, must be >= 1.")
            if raw > MAX_RUNS:
                raise ConfigError(f"{file}: seeds == {raw}, must be <= {MAX_RUNS}.")
            seeds = tuple(range(raw))
        else:
            if not raw:
                raise ConfigError(f"{file}: seeds: empty list; give at least one seed.")
            for i, s in enumerate(raw):
                if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                    raise ConfigError(f"{file}: seeds[{i}]: expected an integer >= 0, got {s!r}.")
            if len(set(raw)) != len(raw):
                raise ConfigError(f"{file}: seeds: a seed is listed twice.")
            seeds = tuple(raw)
        where = "base" if "seed" in base else "grid" if "seed" in grid else \
            "runs" if any("seed" in e for e in entries) else None
        if where:
            raise ConfigError(f"{file}: {where} sets seed, and seeds: repeats every run over seeds; "
                              "use one of them.")

    # the runs: entries x grid points x seeds, each validated as a whole
    total = len(entries) * len(seeds or (None,))
    for values in grid.values():
        total *= len(values)
    if total > MAX_RUNS:
        raise ConfigError(f"{file}: {total} runs (runs: entries x grid points x seeds); a sweep has at "
                          f"most {MAX_RUNS}.")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    combos = []
    for e in entries:
        for p in points:
            for s in seeds or (None,):
                own = {**{k: v for k, v in e.items() if k != "name"}, **p}
                d = {**base, **own}
                if _is_width_list(own.get("width")) and "layers" not in own:
                    d.pop("layers", None)  # a width list given per run sets the depth itself
                if s is not None:
                    d["seed"] = s
                combos.append((e, p, s, d))
    configs = []
    for i, (e, p, s, d) in enumerate(combos):
        try:
            configs.append(RunConfig.from_dict(d))
            _check_critical(configs[-1])
        except ConfigError as exc:
            what = ", ".join(f"{k}={show(v)}" for k, v in {**e, **p}.items())
            raise ConfigError(f"{file}: run {i + 1} ({what or 'base'}): {exc}") from None

    # which fields vary, and the readable unique folder names derived from them
    dicts = [c.to_dict() for c in configs]
    varied = [k for k in dicts[0] if any(d[k] != dicts[0][k] for d in dicts)]
    written = list(dict.fromkeys([*[k for e in entries for k in e if k != "name"], *grid,
                                  *(["seed"] if seeds else [])]))
    order = [k for k in written if k in varied] + [k for k in varied if k not in written]
    name_keys = [k for k in written if k in varied]
    entry_keys = {k for e in entries for k in e}  # a named entry's name stands for all of these
    runs, seen = [], {}
    for i, ((e, p, s, d), config, cd) in enumerate(zip(combos, configs, dicts)):
        entry = e.get("name")
        # values as the file writes them ("kaiming_normal:mode=fan_in", not its canonical
        # "kaiming_normal"); fields only implied (layers by a width list) as normalised
        shown = {k: show(d[k]) if k in d and (k in e or k in p or k == "seed") else show(cd[k])
                 for k in order}
        keys = [k for k in name_keys if not (entry and k in entry_keys)]
        parts = ([entry] if entry else []) + [f"{k}={_slug(shown[k])}" for k in keys]
        if not parts:
            from .experiment import default_name

            parts = [default_name(config)]
        run_name = "_".join(parts)
        if len(run_name) > 150:
            from .experiment import config_hash

            run_name = f"{run_name[:140]}-{config_hash(config)}"
        key = identity_key(config)
        if key in seen:
            e0, p0 = combos[seen[key]][:2]
            what = ", ".join(f"{k}={show(v)}" for k, v in {**e0, **p0}.items()) or "base"
            raise ConfigError(f"{file}: runs {seen[key] + 1} and {i + 1} are the same run ({what}); "
                              "remove one.")
        seen[key] = i
        label_parts = ([entry] if entry else []) + [f"{k}={shown[k]}" for k in order
                                                     if not (entry and (k in entry_keys or k not in written))]
        runs.append(PlannedRun(i, run_name, config, shown, ", ".join(label_parts) or run_name, entry))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # two spellings that slug alike: make them unique by hash
        from .experiment import config_hash

        runs = [PlannedRun(r.index, f"{r.name}-{config_hash(r.config)}" if names.count(r.name) > 1
                           else r.name, r.config, r.varied, r.label, r.entry) for r in runs]

    axes = tuple(k for k in grid if len(grid[k]) > 1 and k in varied)
    sweep = SweepConfig(name, tuple(runs), axes, tuple(order), seeds, (), description.strip(),
                        spec, file)
    if spec.get("expect") is not None:
        from .claims import parse_claims

        claims = parse_claims(spec["expect"], sweep, file)
        sweep = SweepConfig(name, sweep.runs, axes, sweep.varied, seeds, tuple(claims),
                            sweep.description, spec, file)
    return sweep


def from_results(folder) -> SweepConfig:
    """A sweep made of the complete results folders found in ``folder`` (for ``actstats report`` on a
    folder that holds no sweep.yaml, e.g. results/ of single runs)."""
    from .results import stored_config

    folder = Path(folder)
    found = [(p.name, stored_config(p)) for p in sorted(folder.iterdir()) if p.is_dir()]
    found = [(n, c) for n, c in found if c is not None]
    if not found:
        raise ConfigError(f"{folder}: no sweep.yaml and no complete results folders in it.")
    dicts = [c.to_dict() for _, c in found]
    varied = [k for k in dicts[0] if any(d[k] != dicts[0][k] for d in dicts)]
    runs = tuple(PlannedRun(i, n, c, {k: show(d[k]) for k in varied},
                            ", ".join(f"{k}={show(d[k])}" for k in varied) or n)
                 for i, ((n, c), d) in enumerate(zip(found, dicts)))
    return SweepConfig(folder.name, runs, (), tuple(varied), source=str(folder))


def _check_critical(config) -> None:
    """Raise the ConfigError that a run of init 'critical' would raise once its net is built, so
    that a sweep is refused before it writes anything."""
    from . import datainit, inits

    if inits.resolve(config.init).scheme == "critical":
        datainit.critical_point(config)


def _is_width_list(width) -> bool:
    return isinstance(width, (list, tuple)) and len(width) > 1 or isinstance(width, str) and "," in width


def parse_overrides(items) -> dict:
    """``--set width=100 --set init=normal:std=0.1`` -> {"width": 100, "init": "normal:std=0.1"}."""
    import yaml

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {printable(item)}: expected KEY=VALUE, e.g. --set width=100.")
        try:
            parsed = None if value.strip().lower() in ("", "none", "null") else yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[key.strip().replace("-", "_")] = value if isinstance(parsed, (dict, list)) else parsed
    return out
