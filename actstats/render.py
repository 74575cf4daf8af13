"""Rich renderables for the terminal: each function returns a Table or Text, testable without a tty."""

from __future__ import annotations

import math

from rich import box
from rich.table import Table
from rich.text import Text

from .diagnosis import unjudged


def num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    text = f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text  # 6.73e13, -6.13e-5, 3.22e3: the table fits 80 columns


def pct(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%"


def config_line(c) -> str:
    """A run's config in one line, as the table and the figures title it: the options that are not
    their defaults included (bias, input, dtype, seed), the init spelled with its defaults."""
    from .inits import label

    width = c.width
    if isinstance(width, (tuple, list)):
        width = "–".join(map(str, width)) if len(width) <= 4 else f"{min(width)}…{max(width)}"
    layers = f"{c.layers} layer{'s' if c.layers != 1 else ''}"
    parts = [f"{c.act}", f"init {label(c.init)}", f"{layers} × {width} units", f"batch {c.batch}"]
    for key, default, name in (("bias_init", "zeros", "bias"), ("input", "normal", "input"),
                               ("dtype", "float64", ""), ("seed", 0, "seed")):
        value = getattr(c, key, default)
        if value != default:
            parts.append(f"{name} {value}".strip())
    return " · ".join(parts)


def layer_table(result) -> Table:
    """One row per layer: the numbers that tell the story of the run."""
    title = config_line(result.config)
    has_theory = any(layer.get("theory") for layer in result.layers)
    has_grad = "grad_pre" in result.tensors
    nonfinite = any((layer[t] or {}).get("frac_nonfinite", 0) > 0
                    for layer in result.layers for t in ("pre", "post"))
    grad_nonfinite = has_grad and any(layer["grad_pre"]["frac_nonfinite"] > 0 for layer in result.layers)
    # with the inf columns the framed table is wider than 80 columns: rules between rows only
    wide = nonfinite + grad_nonfinite + has_theory + has_grad > 2
    table = Table(title=title, title_justify="left", header_style="bold",
                  box=box.SIMPLE_HEAD if wide else box.HEAVY_HEAD, show_edge=not wide, pad_edge=not wide,
                  padding=(0, 0, 0, 1) if wide else (0, 1))
    table.add_column("layer", justify="right")
    table.add_column("z std", justify="right")
    table.add_column("a mean", justify="right")
    table.add_column("a std", justify="right")
    if has_theory:
        table.add_column("theory", justify="right", style="cyan")
    table.add_column("satur.", justify="right")
    table.add_column("zero", justify="right")
    if nonfinite:
        table.add_column("inf/NaN", justify="right", style="red", min_width=7)
    if has_grad:
        table.add_column("grad std", justify="right")
    if grad_nonfinite:
        table.add_column("grad inf", justify="right", style="red")
    for layer in result.layers:
        post = layer["post"]
        row = [str(layer["layer"]), num(layer["pre"]["std"]), num(post["mean"]), num(post["std"])]
        if has_theory:
            row.append(num((layer.get("theory") or {}).get("post_std")))
        row += [pct(post.get("frac_saturated")), pct(post["frac_zero"])]
        if nonfinite:
            row.append(pct(post["frac_nonfinite"]))
        if has_grad:
            row.append(num(layer["grad_pre"]["std"]))
        if grad_nonfinite:
            row.append(pct(layer["grad_pre"]["frac_nonfinite"]))
        table.add_row(*row)
    table.caption = ("z = pre-activation, a = φ(z)" + ("; theory = predicted a std" if has_theory else "")
                     + ("; grad = dL/dz" if has_grad else "") + ("; mean and std over the finite values only"
                                                              if nonfinite or grad_nonfinite else ""))
    table.caption_justify = "left"
    return table


def diagnosis_grid(result) -> Table:
    """The findings, the verdict first, as a two-column grid that wraps with a hanging indent."""
    diag = result.diagnosis
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    rows = []
    for i, finding in enumerate(diag["findings"]):
        healthy = finding["code"].endswith("healthy")
        style = ("green" if healthy else "red") if i == 0 else ("green" if healthy else "yellow")
        rows.append((finding["code"], Text(finding["text"], style=style)))
    note = unjudged(diag, result.config.backward)
    if note:  # after the passes' findings, before theory's
        at = next((i for i, (code, _) in enumerate(rows) if code.startswith("theory")), len(rows))
        rows.insert(at, ("", Text(note, style="dim")))
    for i, (_, text) in enumerate(rows):
        grid.add_row("Diagnosis:" if i == 0 else "", text)
    return grid


def init_table() -> Table:
    from .inits import ALIASES, SCHEMES

    table = Table(title="Weight init schemes (weight shape (fan_in, fan_out); spec NAME[:key=value,...])",
                  title_justify="left", header_style="bold", show_lines=False)
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("parameters (defaults)", overflow="fold")  # fold, never cut: a formula is the point
    table.add_column("formula", overflow="fold")
    table.add_column("source / also known as", overflow="fold")
    for name, sch in SCHEMES.items():
        params = "\n".join(f"{k}={_default(v)}" for k, v in sch.params.items())
        source = "; ".join(part for part in (sch.source, sch.aka) if part and part != "-")
        table.add_row(name, params or "–", sch.formula, source)
    aliases = ", ".join(f"{a} = {t}" for a, t in ALIASES.items())
    table.caption = (
        f"Aliases: {aliases}.\n"
        "Two meanings of 'Xavier': the CS231n notes (and tutorials that follow them) call randn/sqrt(fan_in) "
        "'Xavier'; Glorot & Bengio, PyTorch and Keras use variance 2/(fan_in+fan_out), and "
        "randn/sqrt(fan_in) is LeCun's (lecun_normal, or untruncated: "
        "variance_scaling:distribution=normal). They coincide when fan_in == fan_out.")
    table.caption_justify = "left"
    return table


def init_detail(name: str) -> Text:
    from .inits import ALIASES, SCHEMES, resolve

    init = resolve(name)
    sch = SCHEMES[init.scheme]
    lines = [f"{init.scheme}" + (f"  (alias '{name}')" if name in ALIASES else ""),
             f"  formula:    {sch.formula}",
             f"  source:     {sch.source}"]
    if sch.aka:
        lines.append(f"  also:       {sch.aka}")
    params = ", ".join(f"{k}={_default(v)}" for k, v in sch.params.items())
    lines.append(f"  parameters: {params or 'none'}")
    if sch.preset:
        lines.append("  preset of:  variance_scaling(" +
                     ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in init.variance_args().items()) + ")")
    _, var = init.moments(500, 500)
    lines.append(f"  example:    a 500×500 layer gets std {math.sqrt(var):.4g}")
    return Text("\n".join(lines))


def activation_table() -> Table:
    from .activations import ACTIVATIONS, DESCRIPTIONS

    table = Table(title="Activations (spec NAME[:key=value])", title_justify="left", header_style="bold")
    table.add_column("name", style="bold")
    table.add_column("parameters")
    table.add_column("definition and saturation rule (|phi'| < 2% of its largest slope)")
    for name, params in ACTIVATIONS.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in params.items()) or "–", DESCRIPTIONS[name])
    return table


PHASE_STYLE = {"ordered": "blue", "critical": "green", "chaotic": "red"}


def theory_table(act: str, rows: list[dict], width: int) -> Table:
    """One row per init with a mean-field prediction (rows of theory.init_summary): where it puts the
    net on the phase diagram, its fixed point, chi_1, depth scale and phase."""
    bias = rows[0]["bias_init"] if rows else "zeros"
    table = Table(title=Text(f"{act} · mean field on a square net of width {width} · input E[x²] = 1"
                             + (f" · bias init {bias}" if bias != "zeros" else "")),
                  title_justify="left", header_style="bold")
    table.add_column("init", overflow="fold")
    for name in ("σ_w²", "σ_b²", "q*", "χ₁", "ξ_c"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("phase", no_wrap=True)
    for r in rows:
        if "reason" in r:
            continue
        xi = "∞" if math.isinf(r["xi_c"]) else num(r["xi_c"])
        table.add_row(r["init"], num(r["sigma_w2"], 4),
                      num(r["sigma_b2"], 4), num(r["q_star"], 4), num(r["chi_1"], 4), xi,
                      Text(r["phase"], style=PHASE_STYLE[r["phase"]]))
    lsuv = any(r["init"].startswith("lsuv") and "reason" not in r for r in rows)
    # phi(c z) = c phi(z) for c > 0: E[phi(sqrt(q) u)^2] is proportional to q, so at chi_1 = 1 the
    # length map is the identity and no q_star can be asked for
    homogeneous = act.partition(":")[0] in ("relu", "leaky_relu", "linear") and any(
        r.get("phase") == "critical" and "reason" not in r for r in rows)
    table.caption = Text("σ_w² = fan_in·Var[W], σ_b² = Var[b]; q* = the limit of q_l = σ_w² E[φ(z)²] + σ_b², "
                         "z ~ N(0, q_(l-1)); χ₁ = σ_w² E[φ'(z)²] at q*: < 1 ordered (gradients vanish), "
                         "> 1 chaotic (they explode); ξ_c = -1/ln χ₁ layers (– in the chaotic phase)."
                         + (" lsuv: its wide limit, every layer rescaled to q = 1." if lsuv else "")
                         + (f" {act.partition(':')[0]} is positively homogeneous: on its critical line every"
                            " q is a fixed point, so q* is the first layer's q (σ_w² E[x²] + σ_b²),"
                            " whatever critical:q_star asks." if homogeneous else ""))
    table.caption_justify = "left"
    return table


def no_prediction_lines(rows: list[dict]) -> list[str]:
    """One line per init the theory makes no prediction for, saying why."""
    return [f"{r['init']}: no prediction, {r['reason']}" for r in rows if "reason" in r]


def _default(value) -> str:
    """A parameter's default as typed: 'required' for none, 10 rather than 10.0."""
    if value is None:
        return "required"
    return f"{value:g}" if isinstance(value, float) else str(value)
