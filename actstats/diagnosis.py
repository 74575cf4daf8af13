"""A plain-words verdict on a run, read off the per-layer numbers.

Each finding has a ``code`` (stable, for claims and tests), a ``text`` (for people, its first words
name the pass it judges: "activations ..." or "gradients ...") and the numbers behind it. Each pass
gets its own verdict (``forward``; ``backward``, None when no backward pass ran or its trend cannot be
read), and the run's ``verdict`` is the worse of the two: nonfinite > symmetric > zero > saturates >
dies > collapse > explode > grad_nonfinite > grad_explode > grad_vanish > healthy. A forward finding
outranks a gradient one because it is usually their cause (collapsed activations vanish gradients);
so a run is "healthy" only when its activations are and its gradients neither vanish nor explode.
The verdict's finding comes first in ``findings``.
"""

from __future__ import annotations

import math

COLLAPSE_RATIO = 0.1     # last/first std below this: collapse; above 1/this: explode
SATURATED = 0.5          # mean saturated fraction at or above this: saturates
DEAD = 0.9               # a layer's zero fraction at or above this: dies

FORWARD = ("nonfinite", "symmetric", "zero", "saturates", "dies", "collapse", "explode", "healthy")
BACKWARD = ("grad_nonfinite", "grad_explode", "grad_vanish", "grad_healthy")
SEVERITY = FORWARD[:-1] + BACKWARD[:-1] + ("healthy",)  # the run's verdict is one of these


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _trend(stds: list[float]) -> tuple[float, float]:
    """(last/first ratio, geometric per-layer factor) of a positive std profile."""
    ratio = stds[-1] / stds[0]
    return ratio, ratio ** (1 / (len(stds) - 1))


def spans(layers: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1–3, 7, 9–10' (ascending layer numbers)."""
    runs: list[list[int]] = []
    for l in layers:
        if runs and l == runs[-1][1] + 1:
            runs[-1][1] = l
        else:
            runs.append([l, l])
    return ", ".join(f"{a}–{b}" if b > a else str(a) for a, b in runs)


def layer_ranges(layers: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> 'layers 1–3, 7, 9–10'."""
    return ("layers " if len(layers) > 1 else "layer ") + spans(layers)


def _first_nonfinite(layers, tensors) -> int | None:
    for i, layer in enumerate(layers):
        if any(layer.get(t) and layer[t]["frac_nonfinite"] > 0 for t in tensors):
            return i + 1
    return None


def diagnose(layers: list[dict], saturates: bool, act_kind: str) -> dict:
    """``layers[i]`` maps pre/post/grad_pre/grad_weight to their summary dicts."""
    L = len(layers)
    found: list[dict] = []
    post = [layer["post"] for layer in layers]

    bad = _first_nonfinite(layers, ("pre", "post"))
    if bad is not None:
        frac = post[-1]["frac_nonfinite"]
        found.append({"code": "nonfinite", "layer": bad, "frac_last": frac,
                      "text": f"activations explode: values stop being finite at layer {bad} "
                              f"({frac:.0%} inf/NaN at layer {L})"})

    sym = [i + 1 for i, p in enumerate(post) if p.get("symmetric")]
    if sym:
        where = layer_ranges(sym)
        found.append({"code": "symmetric", "layers": sym,
                      "text": f"activations symmetric: every unit of a layer computes the same value ({where}); "
                              "their gradients are identical too, so training cannot tell them apart"})

    stds = [p["std"] for p in post]
    finite_stds = all(math.isfinite(s) for s in stds)
    if finite_stds and all(s == 0 for s in stds):
        found.append({"code": "zero", "text": "activations constant: std exactly 0 in all layers"})
    elif finite_stds and L > 1 and stds[0] > 0 and bad is None:  # no trend from finite leftovers
        if stds[-1] == 0:
            found.append({"code": "collapse", "ratio": 0.0, "factor": 0.0,
                          "text": f"activations collapse to exactly 0 by layer {L} (std {_fmt(stds[0])} at layer 1)"})
        else:
            ratio, factor = _trend(stds)
            if ratio < COLLAPSE_RATIO:
                found.append({"code": "collapse", "ratio": ratio, "factor": factor,
                              "text": f"activations collapse toward 0: std ×{factor:.2f} per layer "
                                      f"({_fmt(stds[0])} at layer 1 → {_fmt(stds[-1])} at layer {L})"})
            elif ratio > 1 / COLLAPSE_RATIO:
                found.append({"code": "explode", "ratio": ratio, "factor": factor,
                              "text": f"activations explode: std ×{factor:.2f} per layer "
                                      f"({_fmt(stds[0])} at layer 1 → {_fmt(stds[-1])} at layer {L})"})

    if saturates:
        sat = [p.get("frac_saturated", 0.0) for p in post]
        mean_sat = sum(sat) / L
        if mean_sat >= SATURATED:
            found.append({"code": "saturates", "frac": mean_sat,
                          "text": f"activations saturate: {mean_sat:.0%} of units saturated on average "
                                  f"({sat[-1]:.0%} at layer {L}); φ' is near 0 there"})

    if act_kind in ("relu",):
        zero = [p["frac_zero"] for p in post]
        worst = max(range(L), key=lambda i: zero[i])
        dead_units = post[-1].get("frac_dead_units", 0.0)
        if zero[worst] >= DEAD and not any(f["code"] in ("zero", "symmetric") for f in found):
            found.append({"code": "dies", "layer": worst + 1, "frac": zero[worst],
                          "text": f"activations die: {zero[worst]:.0%} of outputs are exactly 0 at layer "
                                  f"{worst + 1} ({dead_units:.0%} of units at layer {L} are 0 "
                                  "for every sample)"})

    if not any(f["code"] in FORWARD[:-1] for f in found):
        lo, hi = min(stds), max(stds)
        span = f"over layers 1–{L}" if L > 1 else "at layer 1"
        text = (f"activations healthy: post std {_fmt(lo)} {span}" if L == 1
                else f"activations healthy: post std stays at {_fmt(lo)} {span}" if _fmt(lo) == _fmt(hi)
                else f"activations healthy: post std stays between {_fmt(lo)} and {_fmt(hi)} {span}")
        found.append({"code": "healthy", "text": text})

    forward = min((f["code"] for f in found), key=FORWARD.index)
    grads = _gradients(layers)
    backward = grads[0]["code"] if grads else None
    verdict = min((c for c in (forward, backward) if c in SEVERITY), key=SEVERITY.index)
    found.extend(grads)
    found.insert(0, found.pop(next(i for i, f in enumerate(found) if f["code"] == verdict)))
    return {"verdict": verdict, "forward": forward, "backward": backward, "findings": found}


def unjudged(diag: dict, backward_ran: bool) -> str | None:
    """Why the gradients got no verdict, when they did not: said beside the verdict, so that a
    forward-only "healthy" is not read as healthy gradients. Nothing for results saved before the
    verdict judged both passes (no ``backward`` key): whether their gradients were judged is unknown."""
    if diag.get("backward", "unknown") is not None:
        return None
    if not backward_ran:
        return "gradients not judged: no backward pass (--forward-only)"
    return "gradients not judged: a trend needs two layers of finite gradients"


def _pass(code: str) -> str | None:
    return "backward" if code in BACKWARD else "forward" if code in FORWARD else None


def headline(diag: dict) -> list[dict]:
    """The verdict's finding, then the other pass's first finding if there is one: what a figure's
    title or a report row shows (also for results saved before the verdict judged both passes)."""
    findings = diag.get("findings", [])
    verdict = diag.get("verdict")
    first = [f for f in findings if f.get("code") == verdict][:1]
    other = [f for f in findings if _pass(f.get("code", "")) not in (None, _pass(verdict or ""))][:1]
    return first + other


def _gradients(layers: list[dict]) -> list[dict]:
    if not layers[0].get("grad_pre"):
        return []
    L = len(layers)
    def bad(tensor):
        return [i + 1 for i, layer in enumerate(layers)
                if layer.get(tensor) and layer[tensor]["frac_nonfinite"] > 0]

    grad_pre, grad_weight = bad("grad_pre"), bad("grad_weight")
    if grad_pre or grad_weight:
        parts = []
        if grad_pre:  # back-propagation runs from layer L down: the first bad one is the highest
            parts.append(f"gradients stop being finite at layer {grad_pre[-1]} going back from the "
                         f"output (dL/dz not finite at {layer_ranges(grad_pre)})")
        if grad_weight and grad_weight != grad_pre:
            parts.append(f"dL/dW not finite at {layer_ranges(grad_weight)}")
        layer = (grad_pre or grad_weight)[-1]
        return [{"code": "grad_nonfinite", "layer": layer, "text": "; ".join(parts)}]
    g = [layer["grad_pre"]["std"] for layer in layers]
    if L < 2 or not all(math.isfinite(s) for s in g):
        return []
    if g[-1] == 0 or g[0] == 0:
        if g[0] == 0:
            zero = [i + 1 for i, s in enumerate(g) if s == 0]
            return [{"code": "grad_vanish", "ratio": 0.0, "factor": 0.0,
                     "text": f"gradients vanish: exactly 0 at {layer_ranges(zero)} "
                             f"(std {_fmt(g[-1])} at layer {L})"}]
        return []
    ratio = g[0] / g[-1]  # input side over output side
    factor = ratio ** (1 / (L - 1))
    word = "vanish" if ratio < COLLAPSE_RATIO else "explode" if ratio > 1 / COLLAPSE_RATIO else "healthy"
    return [{"code": f"grad_{word}", "ratio": ratio, "factor": factor,
             "text": f"gradients {word}: grad std ×{factor:.2f} per layer toward the input "
                     f"({_fmt(g[-1])} at layer {L} → {_fmt(g[0])} at layer 1)"}]


THEORY_GAP = 0.10  # measured and predicted std differing by more than this is reported


def theory_findings(layers: list[dict], summary: dict) -> list[dict]:
    """One line on the mean-field phase, and where the measurement departs from the prediction."""
    if not summary.get("applies"):
        return [{"code": "theory_na", "text": f"theory: no prediction, {summary['reason']}"}]
    found = []
    if "phase" in summary:
        chi, xi = summary["chi_1"], summary["xi_c"]
        depth = ("ξ_c = ∞" if math.isinf(xi) else f"ξ_c = {xi:.3g} layers") if not math.isnan(xi) \
            else f"gradients grow e-fold every {abs(summary['xi_grad']):.3g} layers"
        found.append({"code": "theory", "phase": summary["phase"], "chi_1": chi,
                      "text": f"theory: {summary['phase']} phase, χ₁ = {chi:.4g}, {depth}, "
                              f"q* = {summary['q_star']:.4g} (σ_w² = {summary['sigma_w2']:.4g}, "
                              f"σ_b² = {summary['sigma_b2']:.4g})"})
    elif "reason_no_fixed_point" in summary:  # e.g. LSUV: each layer predicted from its own variance
        found.append({"code": "theory", "text": "theory: each layer predicted from its own weights' "
                                                f"variance; no phase, {summary['reason_no_fixed_point']}"})
    for layer in layers:
        measured, predicted = layer["post"]["std"], layer["theory"]["post_std"]
        if not (math.isfinite(measured) and math.isfinite(predicted)) or predicted == 0:
            continue
        gap = measured / predicted - 1
        if abs(gap) > THEORY_GAP:
            found.append({"code": "theory_departs", "layer": layer["layer"], "gap": gap,
                          "text": f"measurement departs from theory at layer {layer['layer']}: post std "
                                  f"{measured:.3g} vs {predicted:.3g} predicted ({gap:+.0%}); "
                                  "finite width, non-Gaussian weights or symmetry"})
            break
    return found
