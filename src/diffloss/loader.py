"""Trained models as one ``DiffusionModel``: a ``diffloss train`` run or a diffusers pipeline directory.

``load_trained`` reads a run directory (or its ``checkpoint.safetensors``): the ``diffloss.models.Denoiser`` of
the checkpoint with its EMA (or raw) weights, conditioned on the process time t. ``load_diffusers`` reads a
diffusers directory (written by ``save_pretrained``): a ``UNet2DModel`` (in DIR or DIR/unet) and a
``DDPMScheduler`` / ``EulerDiscreteScheduler`` config (DIR/scheduler/scheduler_config.json or
DIR/scheduler_config.json). The scheduler's beta schedule maps to our discrete VP processes (``linear`` ->
``vp``, ``squaredcos_cap_v2`` -> ``vp-cosine``, both with ``discrete=True`` so that alpha_bar equals diffusers'
``alphas_cumprod`` at every step), its ``prediction_type`` to our target (epsilon -> eps, v_prediction -> v,
sample -> x0). The UNet is called with x_t = alpha * x0 + sigma * eps (the DDPM input; Euler's
``scale_model_input`` produces the same thing) and the 0-based training step n as its timestep.

Either way the result serves sampling (``diffloss.sample.sample_model``) and diagnosis
(``diffloss.diagnose.diagnose``); wrap a network of your own in a ``DiffusionModel`` to use it the same way.

Both load onto the CPU (checkpoint tensors are checked there); ``DiffusionModel.for_inference`` moves the network to
a device and sets its precision and compilation, so a model trained on a GPU samples on a CPU and vice versa.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffloss.checkpoint import load_checkpoint
from diffloss.errors import DifflossError, unknown_name
from diffloss.inference import network_device, prepare_network
from diffloss.levels import TargetPredictor
from diffloss.models import Denoiser
from diffloss.process import Process, VPCosine, VPLinear
from diffloss.target import Target, get_target
from diffloss.train import CHECKPOINT_FILE

SCHEDULERS = ("DDPMScheduler", "EulerDiscreteScheduler")
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


@dataclass(frozen=True)
class DiffusionModel:
    """A network ``(x_t, c) -> prediction of target`` with the conventions needed to use it: its process,
    target, per-sample ``shape``, the level condition ``cond`` it takes (see ``diffloss.levels``) and its number
    of classes: 0 for an unconditional network, K for a class-conditional one, which is also called
    ``network(x_t, c, labels)`` with labels in 0 .. K, K the null label (``diffloss.classes``). Sampling and
    diagnosis pass x_t on the network's device and c (and labels) on the host (``model_condition(...,
    host=True)``): the network moves them to the device itself, without blocking, as ``Denoiser`` and the
    diffusers wrapper do."""

    network: TargetPredictor
    process: Process
    target: Target
    shape: tuple[int, ...]
    cond: str = "t"
    num_classes: int = 0

    @property
    def device(self) -> torch.device:
        """Where the network's parameters are (``diffloss.inference.network_device``)."""
        return network_device(self.network)

    def for_inference(
        self, device: torch.device | str | None = None, precision: str = "fp32", compile: bool = False
    ) -> DiffusionModel:
        """This model with its network on ``device`` (default: where it is), compiled with ``compile``, under
        ``precision`` (``diffloss.inference.prepare_network``)."""
        device = self.device if device is None else torch.device(device)
        return replace(self, network=prepare_network(self.network, device, precision, compile))


class DiffusersNetwork(torch.nn.Module):
    """A diffusers ``UNet2DModel`` as a ``TargetPredictor``: x_t of any shape with ``shape``'s numel per sample in,
    the UNet's ``sample`` in x_t's shape out, the 0-based training step as its timestep."""

    def __init__(self, unet: torch.nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.unet, self.shape = unet, shape

    def forward(self, x_t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        n = n.to(x_t.device, non_blocking=True)  # the samplers pass host steps
        return self.unet(x_t.reshape(-1, *self.shape), n).sample.reshape(x_t.shape)


def load_trained(path: str | Path, *, ema: bool = True) -> DiffusionModel:
    """The network of a ``diffloss train`` run directory or its checkpoint file (EMA weights unless ``ema`` is
    False), in eval mode and without gradients."""
    path = Path(path)
    if not path.exists():
        raise DifflossError(f"--ckpt {path}: no such run directory; give the --out directory of `diffloss train`")
    tensors, meta = load_checkpoint(path / CHECKPOINT_FILE if path.is_dir() else path)
    if "model" not in meta or "config" not in meta:
        raise DifflossError(f"{path} is a diffloss checkpoint but not of `diffloss train` (no model config)")
    net = Denoiser.from_config(meta["model"])
    prefix = "ema/" if ema else "model/"
    try:
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    except RuntimeError as e:
        raise DifflossError(f"{path}: the weights do not fit the model config ({str(e).splitlines()[0]})") from None
    net.eval().requires_grad_(False)
    return DiffusionModel(net, net.process, get_target(meta["config"]["target"]), net.shape, "t", net.num_classes)


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
    beta_schedule = config.get("beta_schedule", "linear")
    if beta_schedule == "linear":
        return VPLinear(T=T, beta_start=float(config.get("beta_start", 1e-4)),
                        beta_end=float(config.get("beta_end", 0.02)), discrete=True)  # fmt: skip
    if beta_schedule == "squaredcos_cap_v2":
        return VPCosine(T=T, discrete=True)
    raise unknown_name("beta_schedule (supported)", beta_schedule, ["linear", "squaredcos_cap_v2"])


def load_diffusers(path: str | Path) -> DiffusionModel:
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
    return DiffusionModel(DiffusersNetwork(unet, shape), process, get_target(PREDICTION_TYPES[kind]), shape, "timestep")
