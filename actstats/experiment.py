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

from . import __version__, activations, diagnosis, network
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

    def save(self, path, plots: bool = True):
        from .results import save

        return save(self, path, plots=plots)


def versions() -> dict:
    return {"actstats": __version__, "numpy": np.__version__, "python": platform.python_version()}


def run_experiment(config: RunConfig | Mapping, progress=None) -> RunResult:
    """Build the net of ``config``, run it, and return its statistics and diagnosis."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(config)
    need = network.check_memory(config)
    measured = network.run(config, progress=progress)
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
    diag = diagnosis.diagnose(layers, act.saturates, act.kind)
    extra = {"chunk_size": measured.chunk_size, "memory_estimate_bytes": need}
    return RunResult(config, layers, histograms, diag, measured.timings, versions(), extra)


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
