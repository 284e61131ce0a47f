"""``Denoiser``, the network the loss and the samplers use (a ``diffloss.levels.TargetPredictor``): a backbone
wrapped with noise conditioning and, optionally, EDM preconditioning.

``Denoiser(x_t, t)`` takes a batch x_t of shape (B, *shape) and the process times t of shape (B,), and returns
its prediction of the training target (x0, eps, v, score or flow) in the shape of x_t. Conditioning, the same
for every process (EDM-style, Karras et al. 2022, Table 1; coefficients from ``diffloss.precond.edm_precond``,
s = sigma / alpha, x~ = x_t / alpha):

- input scaling  the backbone F sees c_in * x~ = x_t / sqrt(alpha^2 * sigma_data^2 + sigma^2) (unit scale);
- noise label    c_noise = ln(s) / 4, passed to the backbone as 1000 * c_noise
  (= 250 ln s; ln s clamped to [-10, 10]) so that its sinusoidal embedding spans a DDPM-like range;
- output         ``precond="none"``: F's output is the prediction (the network predicts its raw target);
  ``precond="edm"``: D = c_skip * x~ + c_out * F is the x0 prediction and the output is the prediction of
  ``target`` that D implies (``diffloss.precond.output_coefficients``), so losses and samplers need not know.

Conditioning on s rather than t makes a trained denoiser independent of how time is parameterized.

Class conditioning (``num_classes`` = K > 0): ``Denoiser(x_t, t, labels)`` also takes (B,) int64 class labels in
0 .. K, where K itself is the *null* label, the unconditional token that label dropout trains (see
``diffloss.classes``); ``Denoiser(x_t, t)`` of a conditional model is its unconditional prediction (every label
null). The backbone adds a learned embedding of the K + 1 labels to its noise embedding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diffloss.errors import DifflossError, unknown_name
from diffloss.models.mlp import MLP
from diffloss.models.unet import UNet
from diffloss.precond import check_precond, edm_precond, output_coefficients
from diffloss.process import Process, process_from_dict
from diffloss.target import Target, expand_like, get_target

BACKBONES = ("unet", "mlp")
LOG_NSR_CLAMP = 10.0


def build_backbone(config: dict[str, Any], shape: tuple[int, ...], num_embeds: int = 0) -> nn.Module:
    """A backbone from its config: ``{"name": "unet", "preset": "tiny", "channels": None}`` for (C, H, W)
    images, or ``{"name": "mlp", "width": 256, "depth": 3}`` for any shape (it sees flattened samples);
    ``num_embeds`` > 0 adds a learned class embedding of that many indices."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name == "unet":
        if len(shape) != 3:
            raise DifflossError(
                f"the unet backbone needs image data of shape (C, H, W), got per-sample shape {tuple(shape)}; "
                "use --backbone mlp"
            )
        return UNet(tuple(shape), **cfg, num_embeds=num_embeds)
    if name == "mlp":
        dim = 1
        for n in shape:
            dim *= n
        return MLP(dim, **cfg, num_embeds=num_embeds)
    raise unknown_name("backbone", str(name), BACKBONES)


def default_backbone(shape: tuple[int, ...]) -> dict[str, Any]:
    """UNet (tiny) for (C, H, W) images with H, W >= 8, the MLP otherwise."""
    if len(shape) == 3 and min(shape[1:]) >= 8:
        return {"name": "unet", "preset": "tiny", "channels": None}
    return {"name": "mlp", "width": 256, "depth": 3}


def backbone_config(
    kind: str, shape: tuple[int, ...], preset: str, channels: int | None, width: int, depth: int
) -> dict[str, Any]:
    """The backbone config of ``diffloss train``'s options: ``auto`` is ``default_backbone(shape)``'s kind; a UNet
    takes ``preset`` and ``channels``, the MLP ``width`` and ``depth``."""
    name = default_backbone(shape)["name"] if kind == "auto" else kind
    if name == "unet":
        return {"name": "unet", "preset": preset, "channels": channels}
    return {"name": name, "width": width, "depth": depth}


class Denoiser(nn.Module):
    """A backbone plus conditioning on the noise level of ``process`` and, with ``num_classes`` > 0, on a class
    label (see the module docstring).

    ``precond`` is ``none`` or ``edm``; ``target`` is what the output predicts (needed by ``edm``; with ``none``
    it is only recorded, None for checkpoints made before it was). Serializes with ``config()`` /
    ``Denoiser.from_config``; the weights live in ``state_dict()``.
    """

    def __init__(
        self,
        backbone: dict[str, Any],
        shape: tuple[int, ...],
        process: Process,
        sigma_data: float = 0.5,
        precond: str = "none",
        target: Target | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if sigma_data <= 0:
            raise DifflossError(f"sigma_data must be > 0, got {sigma_data}")
        if check_precond(precond) != "none" and target is None:
            raise DifflossError(f"--precond {precond} needs the target the denoiser predicts")
        if num_classes < 0:
            raise DifflossError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        self.backbone_config = dict(backbone)
        self.shape = tuple(int(n) for n in shape)
        self.process = process
        self.sigma_data = float(sigma_data)
        self.precond = precond
        self.target = target
        self.num_classes = int(num_classes)
        self.net = build_backbone(backbone, self.shape, self.num_classes + 1 if self.num_classes else 0)
        self._flat = not isinstance(self.net, UNet)

    def config(self) -> dict[str, Any]:
        return {
            "backbone": copy.deepcopy(self.backbone_config),
            "shape": list(self.shape),
            "process": self.process.to_dict(),
            "sigma_data": self.sigma_data,
            "precond": self.precond,
            "target": None if self.target is None else self.target.name,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Denoiser:
        """Inverse of ``config()``; a config without ``precond`` / ``target`` (older checkpoints) is ``none``."""
        target = config.get("target")
        return cls(
            config["backbone"],
            tuple(config["shape"]),
            process_from_dict(config["process"]),
            config["sigma_data"],
            config.get("precond", "none"),
            None if target is None else get_target(target),
            config.get("num_classes", 0),
        )

    def conditioning(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(c_in, label, a_x, a_F) for times t (B,), float32 tensors of shape (B,): the backbone F sees c_in * x_t
        and the label, and the output is a_x * x_t + a_F * F. Computed in float64 on t's device (on the CPU for a
        process whose ``alpha_sigma`` is CPU-only), so a GPU forward does not wait for the device."""
        t = t.detach() if self.process.any_device else t.detach().cpu()
        alpha, sigma = self.process.alpha_sigma(t)
        _, _, c_in, c_noise = edm_precond(sigma / alpha, self.sigma_data)
        label = (1000 * c_noise).clamp(-250 * LOG_NSR_CLAMP, 250 * LOG_NSR_CLAMP)
        a_x, a_f = output_coefficients(self.precond, self.target, alpha, sigma, self.sigma_data)
        return tuple(v.float() for v in (c_in / alpha, label, a_x, a_f))

    def class_labels(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
        """The (B,) int64 labels the backbone gets, on ``device``: None for an unconditional model, the null label K
        where ``labels`` is None; labels outside 0 .. K (or any labels for an unconditional model) are refused.
        The check runs where the labels are, at once on the host, asynchronously on a device: the host never waits."""
        if not self.num_classes:
            if labels is not None:
                raise DifflossError("this denoiser is unconditional (num_classes = 0): call it without labels")
            return None
        if labels is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels).reshape(-1).expand(batch)
        message = f"class labels must be integers in 0 .. {self.num_classes} (the null label)"
        if labels.is_floating_point():
            raise DifflossError(message)
        inside = ((labels >= 0) & (labels <= self.num_classes)).all()
        if labels.device.type == "cpu":
            if not inside:
                raise DifflossError(message)
        else:  # checked on the device, without waiting for it
            torch._assert_async(inside, message)
        return labels.long().to(device, non_blocking=True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction for x_t (B, ...) at times t (B,) (or one time), with class ``labels`` (B,) of a
        conditional model. t and labels may be on x_t's device (as training passes them) or on the host (as the
        samplers and diagnosis do); the conditioning is computed where t is (``conditioning``) and moved to x_t's
        device without blocking, so in neither case does the host wait for the device."""
        t = torch.as_tensor(t).reshape(-1).expand(x_t.shape[0])
        c_in, label, a_x, a_f = (v.to(x_t.device, non_blocking=True) for v in self.conditioning(t))
        x = expand_like(c_in, x_t) * x_t
        x = x.reshape(x.shape[0], -1) if self._flat else x.reshape(x.shape[0], *self.shape)
        classes = self.class_labels(labels, x.shape[0], x.device)
        f = self.net(x, label, classes).reshape(x_t.shape)
        return expand_like(a_x, x_t) * x_t + expand_like(a_f, x_t) * f
