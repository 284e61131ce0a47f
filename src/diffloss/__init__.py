"""diffloss: know what your diffusion loss can reach.

Conventions (see docs/design.md): x_t = alpha(t) * x0 + sigma(t) * eps, lambda = log SNR = log(alpha^2 / sigma^2),
s = sigma / alpha = exp(-lambda / 2) (the "sigma" of EDM/VE). Losses are per-dimension means unless stated.
"""

from diffloss.errors import DifflossError
from diffloss.process import Process, get_process
from diffloss.target import Target, get_target

__all__ = ["DifflossError", "Process", "Target", "get_process", "get_target", "__version__"]
__version__ = "0.1.0"
