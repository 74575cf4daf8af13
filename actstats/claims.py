"""Claims (a sweep file's ``expect:``): parsed and checked against the plan at load time, evaluated
against the results at the end.

Grammar (README "Claims" has the examples)::

    - claim: TEXT                       # what is claimed, shown in the ✓/✗ table
      where: {FIELD: VALUE | [VALUES]}  # the runs it is about (default every run); also name: RUN
      check: CHECK | [CHECK, ...]       # every check must hold in every selected run

    CHECK = {verdict: CODE | [CODES]}   # the run's verdict (the worse of both passes) is (one of) CODE
          | {finding: CODE | [CODES]}   # the diagnosis lists every CODE (e.g. grad_vanish; healthy:
                                        # the activations are healthy, whatever the gradients do)
          | {stat: TENSOR.STAT, layer: LAYERS, [over: DEN], [per_layer: true], [reduce: mean|min|max],
             [over_seeds: mean|median|min|max], OP: X, ...}
    LAYERS = 3 | -1 | first | last | all | "2..last" | [1, 5, -1]   (every selected layer must hold)
    DEN    = LAYER | next | previous | {stat: TENSOR.STAT, layer: LAYER | next | previous}
             the value becomes stat(layer) / DEN; per_layer takes the |Δlayer|-th root of it
    OP     = lt | le | gt | ge | eq | approx (with rel: R or abs: A) | between: [LO, HI]
    X      = a number (true/false for eq) | {where: {FIELD: VALUE}, [stat], [layer], [over], [scale]}:
             the same quantity in the counterpart run, the run equal to this one but for ``where``

A claim that names a stat, layer, code or run that does not exist is a ConfigError at load time.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping

from .diagnosis import BACKWARD, FORWARD, SEVERITY
from .errors import ConfigError, did_you_mean

BASE = ("count", "mean", "std", "min", "max", "frac_zero", "frac_nonfinite", "hist_underflow",
        "hist_overflow")
DERIVED = ("var", "m2", "rms")   # std², second moment std² + mean², its square root
STATS = {
    "pre": BASE + DERIVED,
    "post": BASE + DERIVED + ("frac_saturated", "mean_slope", "unit_std", "symmetric", "frac_dead_units"),
    "grad_pre": BASE + DERIVED + ("unit_std", "symmetric", "frac_dead_units"),
    "grad_weight": BASE + DERIVED,
    "theory": ("pre_std", "post_mean", "post_std", "grad_pre_std"),  # mean-field prediction; nan if none
}
BOOLEAN = ("symmetric",)
BACKWARD_ONLY = ("grad_pre", "grad_weight", "post.mean_slope")
VERDICTS = SEVERITY
FINDINGS = FORWARD + BACKWARD + ("theory", "theory_na", "theory_departs")  # diagnosis.py
OPS = ("lt", "le", "gt", "ge", "eq", "approx", "between")
SYMBOL = {"lt": "<", "le": "≤", "gt": ">", "ge": "≥", "eq": "=", "approx": "≈"}
AGGREGATES = {"mean": statistics.fmean, "median": statistics.median, "min": min, "max": max}
QUANTITY_KEYS = ("stat", "layer", "over", "per_layer", "reduce")
CHECK_KEYS = (*QUANTITY_KEYS, "over_seeds", *OPS, "rel", "abs", "verdict", "finding")
CLAIM_KEYS = ("claim", "where", "check")


def _type(value) -> str:
    from .sweepfile import _type as t

    return t(value)


def fmt(x) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"


# --- layers --------------------------------------------------------------------------------------------

def _one_layer(token, L: int) -> int:
    if token == "first":
        return 1
    if token == "last":
        return L
    if isinstance(token, bool) or not isinstance(token, int):
        raise ValueError(f"layer {token!r} is not a layer; use a number, first, last, all or 'A..B'")
    if token == 0:
        raise ValueError("layer 0 does not exist; layers count from 1 (or from -1 at the output)")
    layer = token if token > 0 else L + 1 + token
    if not 1 <= layer <= L:
        raise ValueError(f"layer {token} does not exist in a net of {L} layers")
    return layer


def _token(text: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def resolve_layers(spec, L: int) -> list[int]:
    """``3``, ``-1``, ``first``, ``last``, ``all``, ``"2..last"``, or a list of those -> layer numbers."""
    if spec == "all":
        return list(range(1, L + 1))
    if isinstance(spec, list):
        if not spec:
            raise ValueError("layer: empty list")
        return [_one_layer(_token(t) if isinstance(t, str) else t, L) for t in spec]
    if isinstance(spec, str) and ".." in spec:
        a, _, b = spec.partition("..")
        lo, hi = _one_layer(_token(a), L), _one_layer(_token(b), L)
        if lo > hi:
            raise ValueError(f"layer range '{spec}' is empty in a net of {L} layers")
        return list(range(lo, hi + 1))
    return [_one_layer(_token(spec) if isinstance(spec, str) else spec, L)]


# --- parsed form ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Quantity:
    tensor: str
    stat: str
    layer: Any                    # layer spec, see resolve_layers
    over: Any = None              # None | layer spec | "next" | "previous" | (tensor, stat, layer spec)
    per_layer: bool = False
    reduce: str | None = None
    scale: float = 1.0

    @property
    def path(self) -> str:
        return f"{self.tensor}.{self.stat}"

    def describe(self) -> str:
        layer = self.layer if not isinstance(self.layer, list) else ",".join(map(str, self.layer))
        text = f"{self.path} at layer {layer}" if self.layer != "all" else f"{self.path} (every layer)"
        if self.over is not None:
            if isinstance(self.over, tuple):
                den = f"{self.over[0]}.{self.over[1]} at layer {self.over[2]}"
            else:
                den = f"layer {self.over}"
            text = f"{text} / {den}"
            if self.per_layer:
                text += ", per layer"
        if self.reduce:
            text = f"{self.reduce} of {text}"
        return text

    def layer_pairs(self, L: int) -> list[tuple[int, int | None]]:
        """(numerator layer, denominator layer or None) for a net of L layers; ValueError if bad."""
        layers = resolve_layers(self.layer, L)
        if self.over is None:
            return [(l, None) for l in layers]
        spec = self.over[2] if isinstance(self.over, tuple) else self.over
        pairs = []
        for l in layers:
            if spec in ("next", "previous"):
                m = l + 1 if spec == "next" else l - 1
                if 1 <= m <= L:
                    pairs.append((l, m))
            elif isinstance(self.over, tuple) and spec is None:
                pairs.append((l, l))
            else:
                pairs.append((l, resolve_layers(spec, L)[0]))
        if not pairs:
            raise ValueError(f"no layer of {self.layer!r} has a {spec} layer in a net of {L} layers")
        if self.per_layer and any(l == m for l, m in pairs):
            raise ValueError("per_layer needs two different layers (layer and over)")
        return pairs


@dataclass(frozen=True)
class Counterpart:
    """The same quantity in another run: the run equal to this one but for ``where``."""
    where: dict
    quantity: Quantity
    text: str = ""                 # the where: as the file writes it

    def describe(self) -> str:
        w = self.text or ", ".join(f"{k}={_show(v)}" for k, v in self.where.items())
        scale = f" × {fmt(self.quantity.scale)}" if self.quantity.scale != 1 else ""
        return f"[{w}]{scale}"


@dataclass(frozen=True)
class Check:
    kind: str                          # stat | verdict | finding
    quantity: Quantity | None = None
    ops: tuple = ()                    # (op, operand, tolerance) with operand float | bool | tuple | Counterpart
    codes: tuple = ()
    over_seeds: str | None = None

    def expected(self) -> str:
        if self.kind == "verdict":
            return "verdict " + " or ".join(self.codes)
        if self.kind == "finding":
            return "finds " + " and ".join(self.codes)
        parts = []
        for op, x, tol in self.ops:
            if op == "between":
                parts.append(f"in [{fmt(x[0])}, {fmt(x[1])}]")
                continue
            target = x.describe() if isinstance(x, Counterpart) else fmt(x)
            if op == "approx":
                rel, ab = tol
                t = [f"±{100 * rel:.3g}%" if rel else "", f"±{fmt(ab)}" if ab else ""]
                parts.append(f"≈ {target} ({' or '.join(s for s in t if s)})")
            else:
                parts.append(f"{SYMBOL[op]} {target}")
        return " and ".join(parts)

    def describe(self) -> str:
        if self.kind != "stat":
            return self.expected()
        seeds = f" ({self.over_seeds} over seeds)" if self.over_seeds else ""
        return f"{self.quantity.describe()}{seeds} {self.expected()}"


@dataclass(frozen=True)
class Claim:
    index: int
    text: str
    where: dict
    runs: tuple[str, ...]                       # names of the selected runs
    checks: tuple[Check, ...]
    counterparts: dict = field(default_factory=dict)  # (check i, op i, run name) -> run name
    where_text: str = ""                        # the where: as the file writes it


def _show(v) -> str:
    from .sweepfile import show

    return show(v)


def _stat_path(value, at: str, backward: bool) -> tuple[str, str]:
    paths = [f"{t}.{s}" for t, ss in STATS.items() for s in ss]
    if not isinstance(value, str):
        raise ConfigError(f"{at}: expected a stat like post.std, got {_type(value)}.")
    if value not in paths:
        raise ConfigError(f"{at}: unknown stat '{value}'{did_you_mean(value, paths)}")
    tensor, stat = value.split(".", 1)
    if not backward and (tensor in BACKWARD_ONLY or value in BACKWARD_ONLY):
        raise ConfigError(f"{at}: {value} needs the backward pass, but a selected run has backward: false.")
    return tensor, stat


def _layer_spec(value, at: str):
    ok = (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value))
    if not ok:
        raise ConfigError(f"{at}: expected a layer (number, first, last, all, 'A..B' or a list), "
                          f"got {_type(value)}.")
    if isinstance(value, str) and ".." not in value and value not in ("first", "last", "all", "next",
                                                                       "previous"):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{at}: '{value}' is not a layer{did_you_mean(value, ['first', 'last', 'all'])}")
    return value


def _unknown(d: Mapping, allowed, at: str):
    for key in d:
        if key not in allowed:
            raise ConfigError(f"{at}: unknown key '{key}'{did_you_mean(str(key), allowed)}")


def _quantity(d: Mapping, at: str, backward: bool, inherit: Quantity | None = None) -> Quantity:
    if "stat" in d:
        tensor, stat = _stat_path(d["stat"], f"{at}.stat", backward)
    elif inherit is not None:
        tensor, stat = inherit.tensor, inherit.stat
    else:
        raise ConfigError(f"{at}: needs stat: (e.g. post.std), or verdict: or finding:.")
    if "layer" in d:
        layer = _layer_spec(d["layer"], f"{at}.layer")
        if layer in ("next", "previous"):
            raise ConfigError(f"{at}.layer: '{layer}' is only valid in over:.")
    elif inherit is not None:
        layer = inherit.layer
    else:
        raise ConfigError(f"{at}: needs layer: (a number, first, last, all or 'A..B').")
    over = inherit.over if inherit is not None and "over" not in d and "stat" not in d else None
    if "over" in d:
        o = d["over"]
        if isinstance(o, Mapping):
            _unknown(o, ("stat", "layer"), f"{at}.over")
            t2, s2 = _stat_path(o["stat"], f"{at}.over.stat", backward) if "stat" in o else (tensor, stat)
            l2 = _layer_spec(o["layer"], f"{at}.over.layer") if "layer" in o else None
            if isinstance(l2, list) or l2 == "all" or (isinstance(l2, str) and ".." in l2):
                raise ConfigError(f"{at}.over.layer: expected one layer, next or previous.")
            over = (t2, s2, l2)
        else:
            over = _layer_spec(o, f"{at}.over")
            if isinstance(over, list) or over == "all" or (isinstance(over, str) and ".." in over):
                raise ConfigError(f"{at}.over: expected one layer, next or previous.")
    per_layer = d.get("per_layer", inherit.per_layer if inherit and "stat" not in d else False)
    if not isinstance(per_layer, bool):
        raise ConfigError(f"{at}.per_layer: expected true or false, got {_type(per_layer)}.")
    if per_layer and over is None:
        raise ConfigError(f"{at}.per_layer: needs over: (the ratio to take per layer).")
    reduce = d.get("reduce", inherit.reduce if inherit and "stat" not in d else None)
    if reduce is not None and reduce not in ("mean", "min", "max"):
        raise ConfigError(f"{at}.reduce: '{reduce}' is not valid; valid values: max, mean, min.")
    scale = d.get("scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ConfigError(f"{at}.scale: expected a number, got {_type(scale)}.")
    return Quantity(tensor, stat, layer, over, per_layer, reduce, float(scale))


def _number(x, at: str, allow_bool: bool = False):
    if isinstance(x, bool):
        if allow_bool:
            return x
        raise ConfigError(f"{at}: expected a number, got bool.")
    if not isinstance(x, (int, float)):
        raise ConfigError(f"{at}: expected a number, got {_type(x)}.")
    try:
        value = float(x)
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not math.isfinite(value):  # nothing compares true with NaN: the claim could never hold
        raise ConfigError(f"{at}: expected a finite number, got {x}.")
    return value


def _where(d, at: str, sweep, allow_name: bool = True) -> dict:
    from .config import OPTIONS
    from .sweepfile import canonical

    if not isinstance(d, Mapping):
        raise ConfigError(f"{at}: expected a mapping of run options, got {_type(d)}.")
    names = [*OPTIONS] + (["name"] if allow_name else [])
    out = {}
    for key, value in d.items():
        if key not in names:
            raise ConfigError(f"{at}: unknown key '{key}'{did_you_mean(str(key), names)}")
        if key == "name":
            values = value if isinstance(value, list) else [value]
            known = [r.name for r in sweep.runs] + [r.entry for r in sweep.runs if r.entry]
            for v in values:
                if v not in known:
                    raise ConfigError(f"{at}.name: no run is named '{v}'{did_you_mean(str(v), known)}")
            out[key] = values
            continue
        if isinstance(value, list) and key != "width":
            if not allow_name:
                raise ConfigError(f"{at}.{key}: expected one value (a counterpart is one run).")
            out[key] = [canonical(key, v, f"{at}.{key}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = [canonical(key, value, f"{at}.{key}")]
    return out


def matches(run, where: dict) -> bool:
    d = run.config.to_dict()
    for key, values in where.items():
        if key == "name":
            if run.name not in values and run.entry not in values:
                return False
        elif d[key] not in values:
            return False
    return True


def _identity(config) -> str:
    from .sweepfile import identity_key

    return identity_key(config)


def parse_claims(raw, sweep, file: str) -> list[Claim]:
    if not isinstance(raw, list):
        raise ConfigError(f"{file}: expect: expected a list of claims, got {_type(raw)}.")
    by_identity = {_identity(r.config): r for r in sweep.runs}
    claims = []
    for i, item in enumerate(raw):
        at = f"{file}: expect[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: expected a mapping with check:, got {_type(item)}.")
        _unknown(item, CLAIM_KEYS, at)
        if "check" not in item:
            raise ConfigError(f"{at}: needs check: (see the claim grammar in the README).")
        text = item.get("claim", "")
        if not isinstance(text, str):
            raise ConfigError(f"{at}.claim: expected a string, got {_type(text)}.")
        where = _where(item.get("where") or {}, f"{at}.where", sweep)
        selected = [r for r in sweep.runs if matches(r, where)]
        if not selected:
            w = ", ".join(f"{k}={'|'.join(map(_show, v))}" for k, v in where.items())
            raise ConfigError(f"{at}.where: no run has {w}.")
        backward = all(r.config.backward for r in selected)
        raw_checks = item["check"] if isinstance(item["check"], list) else [item["check"]]
        if not raw_checks:
            raise ConfigError(f"{at}.check: empty list.")
        checks, counterparts = [], {}
        for j, c in enumerate(raw_checks):
            cat = f"{at}.check" + (f"[{j}]" if isinstance(item["check"], list) else "")
            check = _check(c, cat, backward, sweep)
            _validate(check, cat, selected, by_identity, counterparts, j)
            checks.append(check)
        if not text:
            text = "; ".join(c.describe() for c in checks)
        shown = ", ".join(f"{k}={'|'.join(map(_show, v)) if isinstance(v, list) and k != 'width' else _show(v)}"
                          for k, v in (item.get("where") or {}).items())
        claims.append(Claim(i, text, where, tuple(r.name for r in selected), tuple(checks), counterparts,
                            shown))
    return claims


def _check(c, at: str, backward: bool, sweep) -> Check:
    if not isinstance(c, Mapping):
        raise ConfigError(f"{at}: expected a mapping (stat: and an operator, or verdict:), got {_type(c)}.")
    _unknown(c, CHECK_KEYS, at)
    for kind, allowed in (("verdict", VERDICTS), ("finding", FINDINGS)):
        if kind in c:
            if len(c) > 1:
                other = next(k for k in c if k != kind)
                raise ConfigError(f"{at}: {kind}: stands alone; move '{other}' to a check of its own.")
            codes = c[kind] if isinstance(c[kind], list) else [c[kind]]
            for code in codes:
                if code not in allowed:
                    raise ConfigError(f"{at}.{kind}: unknown {kind} '{code}'{did_you_mean(str(code), allowed)}")
                if not backward and code in BACKWARD:  # a forward-only run judges no gradients
                    raise ConfigError(f"{at}.{kind}: {code} needs the backward pass, but a selected run "
                                      "has backward: false.")
            return Check(kind, codes=tuple(codes))
    q = _quantity(c, at, backward)
    over_seeds = c.get("over_seeds")
    if over_seeds is not None:
        if over_seeds not in AGGREGATES:
            raise ConfigError(f"{at}.over_seeds: '{over_seeds}' is not valid; valid values: "
                              + ", ".join(sorted(AGGREGATES)) + ".")
        if not sweep.seeds and "seed" not in sweep.varied:
            raise ConfigError(f"{at}.over_seeds: the runs do not vary seed (add seeds:).")
    ops = []
    boolean = q.stat in BOOLEAN and q.over is None
    for op in OPS:
        if op not in c:
            continue
        x = c[op]
        oat = f"{at}.{op}"
        if boolean and op != "eq":
            raise ConfigError(f"{oat}: {q.path} is true or false; compare it with eq:.")
        if op == "between":
            if not isinstance(x, list) or len(x) != 2:
                raise ConfigError(f"{oat}: expected a list [low, high], got {_type(x)}.")
            lo, hi = _number(x[0], f"{oat}[0]"), _number(x[1], f"{oat}[1]")
            if lo > hi:
                raise ConfigError(f"{oat}: low {fmt(lo)} > high {fmt(hi)}.")
            ops.append((op, (lo, hi), None))
            continue
        if isinstance(x, Mapping):
            _unknown(x, ("where", *QUANTITY_KEYS, "scale"), oat)
            if "where" not in x:
                raise ConfigError(f"{oat}: a run to compare with needs where: (what differs in it).")
            w = _where(x["where"], f"{oat}.where", sweep, allow_name=False)
            target = Counterpart({k: v[0] for k, v in w.items()}, _quantity(x, oat, backward, inherit=q),
                                 ", ".join(f"{k}={_show(v)}" for k, v in x["where"].items()))
        else:
            target = _number(x, oat, allow_bool=(op == "eq"))
            if boolean and not isinstance(target, bool):
                raise ConfigError(f"{oat}: {q.path} is true or false, got {_type(x)}.")
        tol = None
        if op == "approx":
            rel, ab = c.get("rel", 0.0), c.get("abs", 0.0)
            if "rel" not in c and "abs" not in c:
                raise ConfigError(f"{at}: approx needs a tolerance: rel: (relative) or abs: (absolute).")
            rel, ab = _number(rel, f"{at}.rel"), _number(ab, f"{at}.abs")
            if rel < 0 or ab < 0:
                raise ConfigError(f"{at}: tolerances must be >= 0.")
            tol = (rel, ab)
        ops.append((op, target, tol))
    if not ops:
        raise ConfigError(f"{at}: needs an operator: " + ", ".join(OPS) + ".")
    if ("rel" in c or "abs" in c) and "approx" not in c:
        raise ConfigError(f"{at}: rel:/abs: only go with approx:.")
    return Check("stat", q, tuple(ops), over_seeds=over_seeds)


def _validate(check: Check, at: str, selected, by_identity, counterparts, j):
    """Every layer and counterpart of the check exists in every selected run."""
    if check.kind != "stat":
        return
    for run in selected:
        L = run.config.layers
        try:
            pairs = check.quantity.layer_pairs(L)
        except ValueError as exc:
            raise ConfigError(f"{at}: {exc} (run {run.name}).") from None
        if check.quantity.reduce and len(pairs) < 2 and check.quantity.layer != "all":
            raise ConfigError(f"{at}.reduce: needs several layers (e.g. layer: all).")
        for k, (op, x, _) in enumerate(check.ops):
            if not isinstance(x, Counterpart):
                continue
            try:
                other = run.config.replace(**x.where)
            except ConfigError as exc:
                raise ConfigError(f"{at}.{op}.where: {exc}") from None
            match = by_identity.get(_identity(other))
            if match is None:
                w = ", ".join(f"{key}={_show(v)}" for key, v in x.where.items())
                raise ConfigError(f"{at}.{op}.where: run {run.name} has no counterpart with {w} "
                                  "(the same run but for these fields).")
            try:
                other_pairs = x.quantity.layer_pairs(match.config.layers)
            except ValueError as exc:
                raise ConfigError(f"{at}.{op}: {exc} (run {match.name}).") from None
            n = 1 if x.quantity.reduce else len(other_pairs)
            if n != (1 if check.quantity.reduce else len(pairs)):
                raise ConfigError(f"{at}.{op}: compares {len(pairs)} layers with {n}; select as many.")
            if x.quantity.tensor in ("grad_pre", "grad_weight") and not match.config.backward:
                raise ConfigError(f"{at}.{op}: run {match.name} has no backward pass.")
            counterparts[(j, k, run.name)] = match.name


# --- evaluation ----------------------------------------------------------------------------------------

def stat_value(layer: dict, tensor: str, stat: str):
    values = layer.get(tensor) or {}
    if stat in DERIVED and tensor != "theory":
        mean, std = values.get("mean"), values.get("std")
        if mean is None or std is None:
            return math.nan
        m2 = std * std + mean * mean
        return {"var": std * std, "m2": m2, "rms": math.sqrt(m2)}[stat]
    v = values.get(stat)
    if v is None:
        return math.nan
    return v if isinstance(v, bool) else float(v)


def quantity_values(q: Quantity, result) -> list[tuple[str, Any]]:
    """[(label, value)] of a quantity in one run."""
    layers = result.layers
    L = len(layers)
    out = []
    for l, m in q.layer_pairs(L):
        v = stat_value(layers[l - 1], q.tensor, q.stat)
        label = f"layer {l}"
        if m is not None:
            if isinstance(q.over, tuple):
                d = stat_value(layers[m - 1], q.over[0], q.over[1])
            else:
                d = stat_value(layers[m - 1], q.tensor, q.stat)
            v = _ratio(v, d)
            if q.per_layer:
                v = v ** (1 / abs(l - m)) if v >= 0 else math.nan
            label = f"layer {l}/{m}"
        out.append((label, v))
    if q.reduce:
        nums = [float(v) for _, v in out]
        v = AGGREGATES[q.reduce](nums)
        out = [(f"{q.reduce} of {len(nums)} layers", v)]
    if q.scale != 1:
        out = [(lab, v * q.scale if not isinstance(v, bool) else v) for lab, v in out]
    return out


def _ratio(v: float, d: float) -> float:
    if isinstance(v, bool) or isinstance(d, bool):
        v, d = float(v), float(d)
    if d == 0:
        return math.nan if v == 0 or math.isnan(v) else math.copysign(math.inf, v)
    return v / d


def _holds(op, v, x, tol) -> bool:
    if isinstance(v, bool) or isinstance(x, bool):
        return op == "eq" and v == x
    if math.isnan(v):
        return False
    if op == "lt":
        return v < x
    if op == "le":
        return v <= x
    if op == "gt":
        return v > x
    if op == "ge":
        return v >= x
    if op == "eq":
        return v == x
    if op == "between":
        return x[0] <= v <= x[1]
    rel, ab = tol
    if math.isinf(x) or math.isnan(x):
        return v == x
    return abs(v - x) <= max(rel * abs(x), ab)


@dataclass
class ClaimResult:
    claim: Claim
    passed: bool
    observed: str                 # the numbers behind it, short
    expected: str
    failures: list = field(default_factory=list)  # one line per failing run/layer

    @property
    def mark(self) -> str:
        return "✓" if self.passed else "✗"


def _group_by_seed(names, runs):
    groups: dict[str, list[str]] = {}
    for n in names:
        ident = runs[n].config.identity()
        ident.pop("seed", None)
        groups.setdefault(json.dumps(ident, sort_keys=True, default=str), []).append(n)
    return list(groups.values())


def evaluate(claims, sweep, results: Mapping) -> list[ClaimResult]:
    """Check every claim against ``results`` (run name -> RunResult); a run without a result fails."""
    return [evaluate_claim(c, sweep, results) for c in claims]


def evaluate_claim(claim: Claim, sweep, results: Mapping) -> ClaimResult:
    runs = sweep.by_name()
    expected = "; ".join(c.describe() if len(claim.checks) > 1 else c.expected() for c in claim.checks)
    missing = [n for n in claim.runs if n not in results]
    missing += [m for (_, _, n), m in claim.counterparts.items() if n in claim.runs and m not in results]
    if missing:
        missing = list(dict.fromkeys(missing))
        return ClaimResult(claim, False, f"no result for {len(missing)} run(s): {', '.join(missing[:3])}",
                           expected, [f"{n}: no result (failed or not run)" for n in missing])
    failures, observed = [], []
    for j, check in enumerate(claim.checks):
        if check.kind == "verdict":
            got = {n: results[n].diagnosis["verdict"] for n in claim.runs}
            failures += [f"{n}: verdict {v}" for n, v in got.items() if v not in check.codes]
            observed.append(_summarise_words(got.values()))
            continue
        if check.kind == "finding":
            got = {n: [f["code"] for f in results[n].diagnosis["findings"]] for n in claim.runs}
            for n, codes in got.items():
                lacking = [c for c in check.codes if c not in codes]
                if lacking:
                    failures.append(f"{n}: no {', '.join(lacking)} (found {', '.join(codes)})")
            observed.append(_summarise_words(", ".join(c for c in codes if c in check.codes) or "none"
                                             for codes in got.values()))
            continue
        groups = _group_by_seed(claim.runs, runs) if check.over_seeds else [[n] for n in claim.runs]
        seen = []
        for group in groups:
            values = _aggregate([quantity_values(check.quantity, results[n]) for n in group], check.over_seeds)
            who = runs[group[0]].label if not check.over_seeds else \
                _without_seed(runs[group[0]].label) + f" ({check.over_seeds} of {len(group)} seeds)"
            for k, (op, x, tol) in enumerate(check.ops):
                if isinstance(x, Counterpart):
                    others = [claim.counterparts[(j, k, n)] for n in group]
                    targets = _aggregate([quantity_values(x.quantity, results[m]) for m in others],
                                         check.over_seeds)
                else:
                    targets = [(lab, x) for lab, _ in values]
                for (lab, v), (_, t) in zip(values, targets):
                    if not _holds(op, v, t, tol):
                        rhs = f"{SYMBOL.get(op, op)} {fmt(t)}" if op != "between" else f"in [{fmt(t[0])}, {fmt(t[1])}]"
                        failures.append(f"{who}: {lab}: {fmt(v)}, expected {rhs}")
            seen += [v for _, v in values]
        observed.append(_summarise(seen))
    return ClaimResult(claim, not failures, "; ".join(observed), expected, failures)


def _without_seed(label: str) -> str:
    return ", ".join(p for p in label.split(", ") if not p.startswith("seed=")) or label


def _aggregate(per_run: list[list[tuple[str, Any]]], how: str | None) -> list[tuple[str, Any]]:
    if how is None or len(per_run) == 1:
        return per_run[0]
    f = AGGREGATES[how]
    return [(lab, f([float(run[i][1]) for run in per_run])) for i, (lab, _) in enumerate(per_run[0])]


def _summarise(values) -> str:
    values = list(values)
    if len(values) == 1:
        return fmt(values[0])
    if all(isinstance(v, bool) for v in values):
        t = sum(values)
        return "all true" if t == len(values) else "all false" if t == 0 else f"{t} of {len(values)} true"
    nums = [float(v) for v in values]
    finite = [v for v in nums if not math.isnan(v)]
    if not finite:
        return "nan"
    lo, hi = min(finite), max(finite)
    text = fmt(lo) if lo == hi else f"{fmt(lo)} … {fmt(hi)}"
    return text + (f" ({len(nums) - len(finite)} nan)" if len(finite) < len(nums) else "")


def _summarise_words(words) -> str:
    words = list(words)
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{w} ×{n}" for w, n in counts.items())
