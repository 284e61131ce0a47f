"""diffloss: know what your diffusion loss can reach.

Conventions (see docs/design.md): x_t = alpha(t) * x0 + sigma(t) * eps, lambda = log SNR = log(alpha^2 / sigma^2),
s = sigma / alpha = exp(-lambda / 2) (the "sigma" of EDM/VE). Losses are per-dimension means unless stated.
"""

import os

# OpenMP threads that wait for work sleep instead of spinning (libgomp spins by default). On a CPU shared with other
# processes a spinning thread holds a core that the thread it waits for needs: at 2 threads under load ~12 a bridge
# training step ran 8-150x slower (benchmarks/bridge_step.py). Set before torch loads OpenMP; an explicit
# OMP_WAIT_POLICY wins, and a process that imported torch before diffloss keeps its policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diffloss.errors import DifflossError  # noqa: E402
from diffloss.process import Process, get_process  # noqa: E402
from diffloss.target import Target, get_target  # noqa: E402

__all__ = ["DifflossError", "Process", "Target", "get_process", "get_target", "__version__"]
__version__ = "0.1.0"
