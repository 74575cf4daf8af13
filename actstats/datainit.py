"""Inits that need more than a layer's shape: they look at the activation or at data.

* ``critical:q_star=Q`` (Poole et al. 2016; Schoenholz et al. 2017): weights N(0, sigma_w^2/fan_in)
  and biases N(0, sigma_b^2) with (sigma_w^2, sigma_b^2) on the critical line chi_1 = 1 whose fixed
  point is q* = Q, so a tanh-like net neither orders nor goes chaotic with depth.
* ``lsuv:tol=0.1,max_iter=10`` (Mishkin & Matas 2015, "All you need is a good init"): orthogonal
  pre-init, then, layer after layer, W is divided by the std of its pre-activation on a calibration
  batch until |std - 1| < tol or max_iter rounds are done (the defaults of the authors' public code:
  needed_std 1.0, std_tol 0.1, max_attempts 10).

``inits`` draws the starting point from the layer's own seeded stream; ``apply`` finishes it in
place on a built Network and returns what it did, for stats.json and the theory.
"""

from __future__ import annotations

import math

import numpy as np

from . import inits, theory
from .errors import ConfigError

CALIBRATION_ROWS = 1000  # LSUV's batch: the first rows of the run's own input stream


def apply(net, config) -> dict | None:
    init = inits.resolve(config.init)
    if init.scheme == "critical":
        return _critical(net, config)
    if init.scheme == "lsuv":
        return _lsuv(net, config, init.kwargs["tol"], int(init.kwargs["max_iter"]))
    return None


def critical_point(config) -> theory.CriticalPoint:
    """The (sigma_w^2, sigma_b^2, q*) of a run of init 'critical', or the ConfigError the run would
    raise; a sweep asks before it starts, so that such a run is refused when its file loads."""
    if inits.resolve(config.bias_init, "bias init").scheme != "zeros":
        raise ConfigError("init 'critical' sets the biases too (N(0, sigma_b^2)); leave --bias-init at zeros.")
    return theory.critical_point(config.act, target_q=inits.resolve(config.init).kwargs["q_star"])


def _critical(net, config) -> dict:
    from .network import BIASES, rng

    point = critical_point(config)
    for l, (W, b) in enumerate(zip(net.weights, net.biases), start=1):
        W *= math.sqrt(point.sigma_w2)  # drawn as N(0, 1/fan_in)
        b[...] = math.sqrt(point.sigma_b2) * rng(config.seed, BIASES, l).standard_normal(b.shape)
    return {"scheme": "critical", "sigma_w2": point.sigma_w2, "sigma_b2": point.sigma_b2,
            "q_star": point.q_star}


def _lsuv(net, config, tol: float, max_iter: int) -> dict:
    from .network import input_rows

    rows = min(config.batch, CALIBRATION_ROWS)
    a = input_rows(config, rows, net.weights[0].dtype)
    iterations, stds = [], []
    with np.errstate(all="ignore"):
        for W, b in zip(net.weights, net.biases):
            done = 0
            z = a @ W + b
            std = float(z.std(dtype=np.float64))
            while abs(std - 1) >= tol and done < max_iter and math.isfinite(std) and std > 0:
                W *= 1 / std
                done += 1
                z = a @ W + b
                std = float(z.std(dtype=np.float64))
            iterations.append(done)
            stds.append(std)
            a = net.act.phi(z)
    sigma_w2 = [W.shape[0] * float(np.mean(np.square(W, dtype=np.float64))) for W in net.weights]
    return {"scheme": "lsuv", "tol": tol, "max_iter": max_iter, "calibration_rows": rows,
            "iterations": iterations, "calibrated_std": stds, "sigma_w2": sigma_w2,
            "sigma_w2_back": [W.shape[1] * s / W.shape[0] for W, s in zip(net.weights, sigma_w2)]}
