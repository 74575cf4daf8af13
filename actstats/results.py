"""The results folder: written atomically, read back.

A folder holds ``config.yaml``, ``stats.json``, ``stats.csv``, ``histograms.npz`` and the PNGs. It is
complete only when ``stats.json`` exists. ``save`` writes everything into a hidden sibling folder,
``stats.json`` last, and then swaps it into place, so an interrupted or failing write never leaves a
folder that looks complete and never damages the complete result that was there before.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .config import RunConfig
from .errors import ConfigError, RunError

STATS = "stats.json"
CSV_FIELDS = ("count", "mean", "std", "min", "max", "frac_zero", "frac_nonfinite", "frac_saturated",
              "mean_slope", "unit_std", "symmetric", "frac_dead_units", "hist_underflow",
              "hist_overflow", "theory_std")


def _clean(value):
    """JSON-safe: NaN and infinities become null (JSON has no such numbers), numpy scalars plain."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _unclean(value):
    if isinstance(value, dict):
        return {k: _unclean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unclean(v) for v in value]
    return math.nan if value is None else value


def to_json_text(result) -> str:
    return json.dumps(_clean(result.to_json()), indent=1, ensure_ascii=False, allow_nan=False)


def csv_text(result) -> str:
    """Tidy table: one row per layer x tensor, the config fields as leading columns."""
    buf = io.StringIO()
    cfg = result.config.to_dict()
    cfg["width"] = "|".join(map(str, cfg["width"])) if isinstance(cfg["width"], list) else cfg["width"]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*cfg, "layer", "fan_in", "fan_out", "tensor", *CSV_FIELDS])
    for layer in result.layers:
        for tensor in result.tensors:
            stats = dict(layer[tensor])
            if tensor in ("pre", "post") and layer.get("theory"):
                stats["theory_std"] = layer["theory"].get(f"{tensor}_std")
            row = [_clean(stats.get(f)) for f in CSV_FIELDS]
            writer.writerow([*cfg.values(), layer["layer"], layer["fan_in"], layer["fan_out"], tensor,
                             *["" if v is None else v for v in row]])
    return buf.getvalue()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes | str):
    """Write to a temporary name in the same folder, then rename into place. The file gets the
    permissions of a plain open() (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    mode = "w" if isinstance(data, str) else "wb"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_complete(path) -> bool:
    return (Path(path) / STATS).is_file()


def holds_other_files(path) -> bool:
    """Whether ``path`` exists but is no results folder (no stats.json), nor an empty folder: a
    sweep's folder, the user's own files, which ``actstats run`` never replaces. (A sweep replaces
    what is under its own run names: its folder is its own.)"""
    path = Path(path)
    if not (path.exists() or path.is_symlink()) or is_complete(path):
        return False
    try:
        return not path.is_dir() or any(path.iterdir())
    except OSError:
        return True


def stored_config(path) -> RunConfig | None:
    """The config of the complete result in ``path``, or None when there is none."""
    if not is_complete(path):
        return None
    try:
        data = json.loads((Path(path) / STATS).read_text(encoding="utf-8"))
        return RunConfig.from_dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(result, path, plots: bool = True, figures: dict[str, bytes] | None = None) -> Path:
    """Write the results folder at ``path`` (see the module docstring for the guarantees).

    ``figures`` maps PNG file names to bytes rendered elsewhere (a sweep's worker process renders,
    the parent writes); without it and with ``plots`` the figures are drawn here.
    """
    import yaml

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
        staging.chmod(0o777 & ~_umask())  # as mkdir would make it (mkdtemp's is 0700)
    except OSError as exc:
        raise RunError(f"cannot write results to {path}: {exc.strerror or exc}.") from None
    try:
        write_atomic(staging / "config.yaml", yaml.safe_dump(result.config.to_dict(), sort_keys=False))
        write_atomic(staging / "stats.csv", csv_text(result))
        buf = io.BytesIO()
        np.savez_compressed(buf, **result.histograms)
        write_atomic(staging / "histograms.npz", buf.getvalue())
        if figures is None and plots:
            from . import plots as plotting

            figures = plotting.run_figure_bytes(result)
        for name, data in (figures or {}).items():
            write_atomic(staging / name, data)
        write_atomic(staging / STATS, to_json_text(result))
        old = None
        if path.exists():  # moved aside, not deleted, until the new folder is in place
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(staging, path)
        except BaseException:
            if old is not None:  # put the previous result back (a kill -9 here: sweep.clean_stale)
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"cannot write results to {path}: {exc.strerror or exc}.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def load_results(path):
    """Read a complete results folder back into a RunResult."""
    from .experiment import RunResult

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: no such results folder.")
    if not is_complete(path):
        raise ConfigError(f"{path}: not a complete results folder (no {STATS}).")
    try:
        data = json.loads((path / STATS).read_text(encoding="utf-8"))
        with np.load(path / "histograms.npz") as npz:
            hist = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot read results ({exc}).") from None
    config = RunConfig.from_dict(data.pop("config"))
    layers = _unclean(data.pop("layers"))  # null stands for NaN there
    diag = _unclean(data.pop("diagnosis"))
    timings = data.pop("timings", {})
    vers = data.pop("versions", {})
    data.pop("actstats", None)
    return RunResult(config, layers, hist, diag, timings, vers, data)
