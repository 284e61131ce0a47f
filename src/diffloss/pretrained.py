"""Models from elsewhere as ``DiagnosedModel``: a ``diffloss train`` run directory or a diffusers pipeline.

A diffusers directory (written by ``save_pretrained``) holds a ``UNet2DModel`` (in DIR or DIR/unet) and a
``DDPMScheduler`` / ``EulerDiscreteScheduler`` config (DIR/scheduler/scheduler_config.json or
DIR/scheduler_config.json). Its beta schedule maps to our discrete VP processes (``linear`` -> ``vp``,
``squaredcos_cap_v2`` -> ``vp-cosine``, both with ``discrete=True`` so that alpha_bar equals diffusers'
``alphas_cumprod`` at every step), its ``prediction_type`` to our target (epsilon -> eps, v_prediction -> v,
sample -> x0). The UNet is called with x_t = alpha * x0 + sigma * eps (the DDPM input; Euler's
``scale_model_input`` produces the same thing) and the 0-based training step n as its timestep.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from diffloss.diagnose import DiagnosedModel
from diffloss.errors import DifflossError, unknown_name
from diffloss.levels import Levels
from diffloss.process import Process, VPCosine, VPLinear
from diffloss.target import get_target

SCHEDULERS = ("DDPMScheduler", "EulerDiscreteScheduler")
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def load_run(path: str | Path, *, ema: bool = True) -> DiagnosedModel:
    """The denoiser of a ``diffloss train`` run directory (EMA weights unless ``ema`` is False)."""
    from diffloss.trained import load_trained

    if not Path(path).exists():
        raise DifflossError(f"--ckpt {path}: no such run directory; give the --out directory of `diffloss train`")
    trained = load_trained(path, ema=ema)
    return DiagnosedModel(trained.model, trained.model.process, trained.target, trained.shape, "t")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DifflossError(f"cannot read {path}: {e}") from None


def scheduler_process(config: dict) -> Process:
    """Our discrete VP process for a diffusers scheduler config (raises for what has no exact counterpart)."""
    name = config.get("_class_name")
    if name not in SCHEDULERS:
        raise DifflossError(f"scheduler {name!r} is not supported; use one of: {', '.join(SCHEDULERS)}")
    for key in ("trained_betas", "rescale_betas_zero_snr"):
        if config.get(key):
            raise DifflossError(f"scheduler option {key} is not supported; only the plain beta schedules are")
    T = int(config.get("num_train_timesteps", 1000))
    schedule = config.get("beta_schedule", "linear")
    if schedule == "linear":
        return VPLinear(T=T, beta_start=float(config.get("beta_start", 1e-4)),
                        beta_end=float(config.get("beta_end", 0.02)), discrete=True)  # fmt: skip
    if schedule == "squaredcos_cap_v2":
        return VPCosine(T=T, discrete=True)
    raise unknown_name("beta_schedule (supported)", schedule, ["linear", "squaredcos_cap_v2"])


def load_diffusers(path: str | Path) -> DiagnosedModel:
    """The UNet and scheduler of a diffusers ``save_pretrained`` directory (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise DifflossError(f"--diffusers {path}: no such directory; give a diffusers save_pretrained directory")
    unet_dir = next((d for d in (root / "unet", root) if (d / "config.json").is_file()), None)
    if unet_dir is None or _read_json(unet_dir / "config.json").get("_class_name") != "UNet2DModel":
        raise DifflossError(f"--diffusers {path}: no UNet2DModel (config.json in the directory or in unet/)")
    sched = next((f for f in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json")
                  if f.is_file()), None)  # fmt: skip
    if sched is None:
        raise DifflossError(f"--diffusers {path}: no scheduler/scheduler_config.json or scheduler_config.json")
    config = _read_json(sched)
    process = scheduler_process(config)
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise unknown_name("prediction_type (supported)", kind, PREDICTION_TYPES)
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False).eval().requires_grad_(False)
    except (OSError, ValueError, RuntimeError) as e:
        raise DifflossError(f"cannot load the UNet2DModel in {unet_dir}: {str(e).splitlines()[0]}") from None
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(unet.config.in_channels), int(h), int(w))

    def denoiser(x_t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return unet(x_t.reshape(-1, *shape), n).sample.reshape(x_t.shape)

    return DiagnosedModel(denoiser, process, get_target(PREDICTION_TYPES[kind]), shape, "timestep")


def snap_to_steps(process: Process, sigmas: np.ndarray) -> Levels:
    """Levels at the discrete training steps nearest (in log s) to ``sigmas``, duplicates dropped; the
    process must have ``T`` steps (``discrete`` VP)."""
    steps = torch.arange(process.T)
    s_steps = process.nsr(process.timestep_t(steps)).numpy()
    n = np.unique(np.abs(np.log(s_steps)[None, :] - np.log(np.asarray(sigmas))[:, None]).argmin(1))
    n = torch.from_numpy(n)
    return Levels.from_t(process, process.timestep_t(n), n)
