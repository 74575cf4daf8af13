"""actstats: watch what weight initialization does to activations and gradients, layer by layer.

    >>> import actstats
    >>> result = actstats.run_experiment({"init": "he", "act": "relu", "layers": 10})
    >>> result.diagnosis["verdict"]
    'healthy'

The public names are imported on first use, so that ``actstats --help`` does not pay for numpy.
"""

__version__ = "0.2.3"

_PUBLIC = {
    "RunConfig": "config",
    "RunResult": "experiment",
    "run_experiment": "experiment",
    "init_weights": "inits",
    "load_results": "results",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'actstats' has no attribute {name!r}")
