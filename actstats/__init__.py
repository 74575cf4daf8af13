"""actstats: watch what weight initialization does to activations and gradients, layer by layer.

    >>> import actstats
    >>> result = actstats.run_experiment({"init": "he", "act": "relu", "layers": 10})
    >>> result.diagnosis["verdict"]
    'healthy'
"""

__version__ = "0.1.0"

from .config import RunConfig  # noqa: E402
from .experiment import RunResult, run_experiment  # noqa: E402
from .inits import init_weights  # noqa: E402
from .results import load_results  # noqa: E402

__all__ = ["RunConfig", "RunResult", "run_experiment", "init_weights", "load_results", "__version__"]
