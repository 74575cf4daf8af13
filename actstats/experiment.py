"""One experiment end to end, as data: ``run_experiment(config) -> RunResult``.

The result holds what a results folder holds (config, per-layer statistics, histograms, diagnosis,
timings, versions); ``result.save(path)`` writes the folder and ``actstats.load_results(path)``
reads it back into an equal RunResult.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from . import __version__, activations, datainit, diagnosis, network
from .config import RunConfig

HIST_TENSORS = ("pre", "post", "grad_pre", "grad_weight")


@dataclass
class RunResult:
    config: RunConfig
    layers: list[dict]                       # per layer: layer, fan_in, fan_out, pre, post, ...
    histograms: dict[str, np.ndarray]        # "<tensor>_edges" (L, bins+1), "<tensor>_counts" (L, bins)
    diagnosis: dict
    timings: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # chunk size, memory estimate, theory summary ...

    @property
    def tensors(self) -> list[str]:
        return [t for t in HIST_TENSORS if self.layers and self.layers[0].get(t)]

    def column(self, tensor: str, stat: str) -> list[float]:
        """One statistic across layers, e.g. ``result.column("post", "std")``."""
        return [layer[tensor][stat] if layer.get(tensor) else float("nan") for layer in self.layers]

    def to_json(self) -> dict:
        return {
            "actstats": __version__,
            "config": self.config.to_dict(),
            "layers": self.layers,
            "diagnosis": self.diagnosis,
            "timings": self.timings,
            "versions": self.versions,
            **self.extra,
        }

    def save(self, path, plots: bool = True, figures: dict | None = None):
        from .results import save

        return save(self, path, plots=plots, figures=figures)


def versions() -> dict:
    from . import kernels

    # kernels: whether the compiled passes ran (their sums round differently from NumPy's, and
    # float32 tanh/sigmoid can move a value across a bin edge: a different road, not a different run)
    return {"actstats": __version__, "numpy": np.__version__, "python": platform.python_version(),
            "kernels": kernels.LIB is not None}


def run_experiment(config: RunConfig | Mapping, progress=None) -> RunResult:
    """Build the net of ``config``, run it, and return its statistics and diagnosis."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    need = network.check_memory(config)
    net = network.Network.build(config)
    init_info = datainit.apply(net, config)
    measured = network.run(config, net=net, progress=progress)
    act = activations.get(config.act)
    dims = config.dims
    layers, hist = [], {}
    for l, st in enumerate(measured.layers):
        entry = {"layer": l + 1, "fan_in": dims[l], "fan_out": dims[l + 1],
                 "pre": st.pre.summary(), "post": st.post.summary(saturation=True)}
        if st.grad_pre is not None:
            entry["post"]["mean_slope"] = st.slope_sum / st.post.count
            entry["grad_pre"] = st.grad_pre.summary()
            entry["grad_weight"] = st.grad_weight.summary()
        layers.append(entry)
        for name in HIST_TENSORS:
            ts = getattr(st, name)
            if ts is None:
                continue
            hist.setdefault(f"{name}_edges", []).append(ts.hist.edges())
            hist.setdefault(f"{name}_counts", []).append(ts.hist.counts)
            hist.setdefault(f"{name}_underflow", []).append(ts.hist.underflow)
            hist.setdefault(f"{name}_overflow", []).append(ts.hist.overflow)
    histograms = {k: np.asarray(v) for k, v in hist.items()}
    summary = add_theory(config, layers, init_info)
    diag = diagnosis.diagnose(layers, act.saturates, act.kind)
    diag["findings"].extend(diagnosis.theory_findings(layers, summary))
    extra = {"chunk_size": measured.chunk_size, "memory_estimate_bytes": need, "theory": summary}
    if init_info:
        extra["init"] = init_info
    return RunResult(config, layers, histograms, diag, measured.timings, versions(), extra)


def add_theory(config: RunConfig, layers: list[dict], init_info: dict | None = None) -> dict:
    """Put the mean-field prediction of each layer in ``layers[i]["theory"]`` and return the
    net's summary: fixed point, chi_1, depth scale and phase, or why theory does not apply.

    Data-driven inits are predicted from what they chose: critical's (sigma_w^2, sigma_b^2), and
    LSUV's realized per-layer weight variances with the bias init's variance (LSUV leaves b alone);
    LSUV with a bias of non-zero mean gets no prediction, like any other init."""
    from . import theory
    from .config import INPUT_SECOND_MOMENT
    from .inits import resolve

    q0 = INPUT_SECOND_MOMENT[config.input]
    dims = config.dims
    if init_info and init_info["scheme"] == "lsuv":
        # LSUV rescales W only: each layer keeps its bias variance, q_l = sigma_w2_l E[a_{l-1}^2] + Var[b_l]
        weights, bias = resolve(config.init), resolve(config.bias_init, "bias init")
        reason = theory.why_no_prediction(weights, bias, dims[0], dims[1])  # a bias of non-zero mean
        if reason:
            return {"applies": False, "reason": reason}
        sigma_w2 = init_info["sigma_w2"]
        b2 = [bias.moments(d_in, d_out)[1] for d_in, d_out in zip(dims, dims[1:])]
        predicted = theory.predict(config.act, sigma_w2, b2, q0, init_info["sigma_w2_back"])
        sigma_b2 = b2[0]
    elif init_info and init_info["scheme"] == "critical":
        sigma_w2, sigma_b2 = [init_info["sigma_w2"]] * len(layers), init_info["sigma_b2"]
        back = [init_info["sigma_w2"] * d_out / d_in for d_in, d_out in zip(dims, dims[1:])]
        predicted = theory.predict(config.act, sigma_w2, sigma_b2, q0, back)
    else:
        predicted, reason = theory.predict_for_init(config.init, config.bias_init, config.act,
                                                    config.widths, dims[0], q0)
        if predicted is None:
            return {"applies": False, "reason": reason}
        weights = resolve(config.init)  # parsed once, not once per layer
        sigma_w2 = [d_in * weights.moments(d_in, d_out)[1] for d_in, d_out in zip(dims, dims[1:])]
        sigma_b2 = resolve(config.bias_init).moments(dims[0], dims[1])[1]
    for layer, p in zip(layers, predicted):
        layer["theory"] = {k: p[k] for k in ("pre_std", "post_mean", "post_std", "grad_pre_std")}
    out = {"applies": True, "sigma_w2": min(sigma_w2), "sigma_b2": sigma_b2}
    if len(set(sigma_w2)) > 1:  # layers of different variance: no single length map
        out["reason_no_fixed_point"] = "layers differ in sigma_w^2, so there is no single fixed point"
        return out
    fp = theory.fixed_point(config.act, out["sigma_w2"], out["sigma_b2"], q0)
    out.update(q_star=fp.q_star, chi_1=fp.chi_1, xi_c=fp.xi_c, xi_grad=fp.xi_grad, phase=fp.phase)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text.replace("=", "")).strip("-")


def default_name(config: RunConfig) -> str:
    """A folder name that says what the run is: act_init_L10_w500 plus whatever is not default."""
    width = "-".join(map(str, config.width)) if isinstance(config.width, tuple) else str(config.width)
    parts = [_slug(config.act), _slug(config.init), f"L{config.layers}", f"w{width}"]
    base = RunConfig()
    for key, short in (("bias_init", "b"), ("input", "in"), ("input_dim", "d"), ("batch", "n"),
                       ("dtype", ""), ("seed", "s"), ("bins", "bins")):
        value = getattr(config, key)
        if value != getattr(base, key):
            parts.append(short + _slug(str(value)))
    if not config.backward:
        parts.append("fwd")
    return "_".join(parts)


def config_hash(config: RunConfig) -> str:
    return hashlib.sha256(json.dumps(config.identity(), sort_keys=True).encode()).hexdigest()[:8]
