"""The training loop: AdamW with linear warm-up, EMA, gradient clipping, checkpoints that resume bit for bit.

Randomness comes only from three ``torch.Generator`` objects seeded from ``seed`` (the global RNG is never
read or advanced): model initialization (``seed``), the data order (``seed + 1``) and the noise levels and
noise of the loss (``seed + 2``). A checkpoint holds the model, the EMA model, the AdamW state, the step,
both running generator states and the data order (current permutation and position), so a run resumed from
a checkpoint continues exactly as the uninterrupted run would have (same thread count assumed: CPU kernels
may sum in a different order with a different number of threads). An adaptive level density (``optimal``)
is told each batch's per-sample x0 MSE after the update (``LevelDensity.observe``) and its state is saved in
the checkpoint too. A class-conditional run (``conditional``) feeds each batch's labels to the model, each
replaced by the null label with probability ``label_dropout`` (``diffloss.classes``); those B uniforms are
drawn from the noise generator before the batch's levels and noise.

The loss is ``diffloss.losses.diffusion_loss`` of the model's output, the prediction of ``target``: per sample
w_target(lambda) * MSE_target, a per-dimension mean. With ``precond="edm"`` that output is the prediction implied
by EDM's D = c_skip * x~ + c_out * F (``diffloss.precond``), so the same number is w_x0(lambda) * MSE(D, x0) =
w_x0(lambda) * c_out^2 * MSE(F, (x0 - c_skip * x~) / c_out): the network F is trained on its effective target
with weight w_x0 * c_out^2, and ``weighting=edm`` (w_x0 = 1 / c_out^2) with ``density=edm-lognormal`` and
``target=x0`` is exactly EDM's loss (per-dimension mean instead of EDM's sum over dimensions).

Files in the output directory:

- ``config.json``: the ``TrainConfig`` plus the data's fingerprint, shape and size;
- ``metrics.jsonl``: one JSON line every ``log_every`` steps with ``step``, ``loss`` (mean per-sample loss,
  each sample's loss a per-dimension mean, weighted as configured, over the steps since the last line),
  ``loss_by_logsnr`` (the same mean split into log-SNR buckets), ``lr``, ``grad_norm``, ``time`` (seconds
  since this process started) and ``samples_per_sec`` (and, when the data's J* is known, ``loss_floor`` and
  ``reducible_loss``; see ``train``); every ``eval_every`` steps a line with ``eval_loss``,
  the loss of the EMA model on a fixed batch with fixed noise (levels from the density: for an adaptive one,
  its current state, so eval losses of different steps use different levels);
- ``checkpoint.safetensors``: the latest checkpoint (every ``ckpt_every`` steps and at the end).

Devices, precision, data parallelism (``Execution``; none of it is part of the ``TrainConfig``). The data, the model,
its EMA and the optimizer live on ``device``. Data order, label dropout and noise levels are drawn on the CPU; the
noise eps is drawn from the noise generator on the CPU, or, on a CUDA device, from its own CUDA generator (seeded
``seed + 4``), so a CPU run's numbers do not depend on whether CUDA exists. ``precision="bf16"`` runs the loss (the
network's forward, hence its backward) under bfloat16 autocast; parameters, AdamW state and EMA stay float32. Inside
the update loop nothing waits for the device: losses, levels and gradient norms stay tensors until a metrics line.

Under ``torchrun`` (``world.size`` = N processes) every rank draws the same global batch of ``batch`` rows, labels,
levels and noise (the same generators, the same order), keeps its contiguous share ``batch / N`` (rank r the r-th),
and DistributedDataParallel averages the gradients: so N processes make the same updates as one process with the
same ``batch`` (up to the order of floating-point sums). Rank 0 alone writes files. A checkpoint records the world
size; ``--resume`` needs the same one. A checkpoint loads onto any device; the bit-exact resume holds on the device
(and thread count) it was written on.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from diffloss.checkpoint import load_checkpoint, save_checkpoint
from diffloss.classes import drop_labels, num_classes_of
from diffloss.data import Dataset, load_dataset, load_labels_file
from diffloss.density import density_from_dict
from diffloss.device import World, autocast, barrier, check_precision
from diffloss.errors import DifflossError
from diffloss.inference import execution_record
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.levels import Levels
from diffloss.losses import diffusion_loss
from diffloss.models import Denoiser
from diffloss.optimal.reference import Table
from diffloss.precond import check_precond
from diffloss.process import process_from_dict
from diffloss.shards import rank_rows
from diffloss.target import get_target
from diffloss.weighting import weighting_from_dict

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
OUTPUTS = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE)
LOGSNR_EDGES = (-10.0, -5.0, -2.5, 0.0, 2.5, 5.0, 10.0)
EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on, in plain JSON types (``process``, ``weighting``, ``density`` and
    ``backbone`` are registry configs ``{"name": ..., **params}``). ``RESUMABLE`` fields may change on
    ``--resume``; any other difference is refused. ``precond`` is the denoiser's preconditioning
    (``diffloss.precond``: ``none``, the default and the meaning of configs written before it existed, or ``edm``).

    Class conditioning: ``conditional`` trains on the data's labels (``labels``: a .npy/.npz file of them for
    data that has none), with ``num_classes`` classes (at least the data's largest label + 1) and label dropout
    ``label_dropout``. The defaults are an unconditional run, so configs written before these fields existed
    load as unconditional."""

    data: str
    process: dict[str, Any]
    target: str
    weighting: dict[str, Any]
    density: dict[str, Any]
    backbone: dict[str, Any]
    steps: int
    batch: int = 64
    seed: int = 0
    lr: float = 2e-4
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    sigma_data: float = 0.5
    precond: str = "none"
    ckpt_every: int = 500
    log_every: int = 25
    eval_every: int = 0
    conditional: bool = False
    labels: str | None = None
    num_classes: int = 0
    label_dropout: float = 0.0

    RESUMABLE = ("steps", "ckpt_every", "log_every", "eval_every")

    def __post_init__(self) -> None:
        checks = [
            (self.steps > 0, f"--steps must be > 0, got {self.steps}"),
            (self.batch > 0, f"--batch must be > 0, got {self.batch}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (self.ckpt_every > 0, f"--ckpt-every must be > 0, got {self.ckpt_every}"),
            (self.log_every > 0, f"--log-every must be > 0, got {self.log_every}"),
            (self.eval_every >= 0, f"--eval-every must be >= 0 (0 = off), got {self.eval_every}"),
            (0 <= self.label_dropout < 1, f"--label-dropout must be in [0, 1), got {self.label_dropout}"),
            (
                self.conditional or (self.labels is None and self.num_classes == 0 and self.label_dropout == 0),
                "--labels and --label-dropout apply to class-conditional training: add --conditional",
            ),
            (not self.conditional or self.num_classes > 0, f"num_classes must be > 0, got {self.num_classes}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DifflossError(msg)
        check_precond(self.precond)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a ``to_dict`` (or config.json) dict; keys it lacks take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The fields that have a default, with it: what a config written before they existed meant."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (missing counts as different)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b or (key in old) != (key in new):
            out.append(f"{prefix}{key}")
    return out


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up over ``warmup`` updates, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """EMA decay after update ``step``: min(ema_decay, (1 + step) / (10 + step)), so early averages are short."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def logsnr_bucket(lam: float) -> str:
    """The label of the ``LOGSNR_EDGES`` bucket holding ``lam``, e.g. ``"[-2.5,0)"`` or ``"[10,inf)"``."""
    edges = (-math.inf, *LOGSNR_EDGES, math.inf)
    i = bisect.bisect_right(LOGSNR_EDGES, lam)
    return f"[{edges[i]:g},{edges[i + 1]:g})"


class DataOrder:
    """Shuffled minibatch indices: a fresh permutation of the N rows per epoch, drawn from its own generator;
    an epoch's last incomplete batch is dropped. Its whole state is three tensors (``state`` / ``load``)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx

    def state(self) -> dict[str, torch.Tensor]:
        return {"rng": self.gen.get_state(), "perm": self.perm, "pos": torch.tensor(self.pos)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["rng"])
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])


def train_data(data: str, labels: str | None = None) -> Dataset:
    """The training data ``data`` (a ``load_dataset`` spec), labelled from the file ``labels`` if given."""
    ds = load_dataset(data)
    return ds if labels is None else ds.with_labels(load_labels_file(labels))


@dataclass(frozen=True)
class Execution:
    """Where and how a run computes (``diffloss.device``): the torch device, the precision (``fp32``, ``tf32`` or
    ``bf16``), whether the network is ``torch.compile``d, and the torchrun ``world``. None of it changes the config;
    it is recorded in ``config.json`` under ``execution``."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    compile: bool = False
    world: World = field(default_factory=World)

    def __post_init__(self) -> None:
        check_precision(self.precision, self.device)

    def to_dict(self) -> dict[str, Any]:
        return execution_record(self.device, self.precision, self.compile, self.world)


@dataclass
class Run:
    """The resolved pieces of a run (everything validated) and its mutable training state."""

    cfg: TrainConfig
    data: Dataset
    x: torch.Tensor  # (N, *shape) float32, on the device
    y: torch.Tensor | None  # (N,) int64 class labels of a conditional run (on the device), else None
    objective: dict[str, Any]  # process, target, weighting, density: the keyword arguments of diffusion_loss
    model: Denoiser
    ema: Denoiser
    opt: torch.optim.AdamW
    order: DataOrder
    noise: torch.Generator  # CPU: labels, levels, and eps on a CPU device
    execution: Execution = field(default_factory=Execution)
    noise_device: torch.Generator | None = None  # eps on a CUDA device
    net: torch.nn.Module | None = None  # what the update calls: the model, compiled and/or DDP-wrapped
    step: int = 0

    @classmethod
    def create(cls, cfg: TrainConfig, data: Dataset | None = None, execution: Execution | None = None) -> Run:
        """Build every object of ``cfg``; raises ``DifflossError`` on any bad setting. ``data`` is ``cfg.data``
        already loaded (by a caller that needed it first); by default it is loaded here."""
        ex = execution or Execution()
        data = train_data(cfg.data, cfg.labels) if data is None else data
        if cfg.batch > data.n:
            raise DifflossError(f"--batch {cfg.batch} exceeds the {data.n} samples of {cfg.data!r}; lower --batch")
        if cfg.batch % ex.world.size:
            raise DifflossError(
                f"--batch {cfg.batch} does not split over {ex.world.size} processes; give a multiple of {ex.world.size}"
            )
        y = None
        if cfg.conditional:
            if num_classes_of(data.labels, repr(cfg.data)) > cfg.num_classes:
                raise DifflossError(f"the labels of {cfg.data!r} exceed num_classes = {cfg.num_classes}")
            y = torch.from_numpy(data.labels).long().to(ex.device)
        process = process_from_dict(cfg.process)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = Denoiser(
                cfg.backbone, data.shape, process, cfg.sigma_data, cfg.precond, get_target(cfg.target), cfg.num_classes
            )
        model.to(ex.device)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        x = torch.from_numpy(data.images()).float().to(ex.device)
        objective = objective_of(cfg.to_dict()) | {"process": process}
        order = DataOrder(data.n, cfg.batch, cfg.seed + 1)
        noise_device = torch.Generator(ex.device).manual_seed(cfg.seed + 4) if ex.device.type != "cpu" else None
        run = cls(cfg, data, x, y, objective, model, ema, opt, order, torch.Generator(), ex, noise_device, model)
        run.noise.manual_seed(cfg.seed + 2)
        run.preflight()
        if ex.compile:
            model.compile()
        if ex.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            run.net = DistributedDataParallel(model, device_ids=[ex.device.index] if ex.device.type == "cuda" else None)
        return run

    # ---- the loss ---------------------------------------------------------------------------------------
    def loss(
        self,
        model: torch.nn.Module,
        rows: torch.Tensor,
        generator: torch.Generator,
        dropout: float = 0.0,
        noise_generator: torch.Generator | None = None,
        part: slice = slice(None),
    ) -> tuple[torch.Tensor, Levels]:
        """(per-sample losses, levels) of ``model`` on the batch ``rows`` (B,), entries ``part`` of it.

        The whole batch's random numbers are drawn, in this order: a conditional run's label-dropout uniforms (B, from
        ``generator``; labels dropped with probability ``dropout``), B levels (``generator``), and the (B, *shape)
        noise (``noise_generator``, by default ``generator``). Only the entries ``part`` are then evaluated, so a
        rank's share of a batch sees exactly the numbers it would in the whole batch. The losses are (len(part),)
        and the levels those of the whole batch."""
        labels = None
        if self.y is not None:
            labels = drop_labels(self.y[rows], dropout, self.cfg.num_classes, generator)[part]
        o = self.objective
        levels = o["density"].sample(len(rows), generator, o["process"])
        g = generator if noise_generator is None else noise_generator
        noise = torch.randn((len(rows), *self.x.shape[1:]), generator=g, device=g.device)[part].to(self.x.device)
        with autocast(self.execution.precision, self.execution.device):
            per_sample, _ = diffusion_loss(
                model,
                self.x[rows[part]],
                generator=generator,
                noise=noise,
                labels=labels,
                levels=levels.select(part),
                **o,
            )
        return per_sample.float(), levels

    def loss_floor(self, jstar: Table) -> float:
        """The floor of this run's objective (its density's current state) from the J* table ``jstar``."""
        from diffloss.objective import Objective
        from diffloss.optimal.floor import objective_floor, table_jstar

        o = self.objective
        floor = objective_floor(Objective(o["target"], o["weighting"], o["density"]), o["process"], table_jstar(jstar))
        return floor.total

    def preflight(self) -> None:
        """One loss evaluation on two rows with a throwaway generator, so that a weighting or density that is
        undefined for the process (or a non-finite loss) fails before anything is written."""
        cfg = self.cfg
        with torch.no_grad():
            per_sample, _ = self.loss(self.model, torch.arange(2), torch.Generator().manual_seed(0))
        if not torch.isfinite(per_sample).all():
            raise DifflossError(
                f"the loss is not finite for weighting {cfg.weighting['name']!r} with process "
                f"{cfg.process['name']!r}, target {cfg.target!r} and density {cfg.density['name']!r}; "
                "pick another weighting or density"
            )

    def eval_loss(self) -> float:
        """Mean loss of the EMA model on a fixed batch (rows and noise fixed by the seed, drawn on the CPU; labels not
        dropped)."""
        g = torch.Generator().manual_seed(self.cfg.seed + 3)
        rows = torch.randperm(self.data.n, generator=g)[: min(EVAL_BATCH, self.data.n)]
        with torch.no_grad():
            per_sample, _ = self.loss(self.ema, rows, g)
        return per_sample.mean().item()

    # ---- one update -------------------------------------------------------------------------------------
    def update(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One AdamW step; returns (the global batch's per-sample losses (B,), its log-SNRs (B,), the gradient norm
        before clipping (a 0-d tensor)), without waiting for the device."""
        cfg, world = self.cfg, self.execution.world
        for group in self.opt.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        share = rank_rows(cfg.batch, world)  # equal shares: Run.create checked that the ranks divide the batch
        part = slice(share.start, share.stop)
        local, levels = self.loss(self.net, self.order.next(), self.noise, cfg.label_dropout, self.noise_device, part)
        self.opt.zero_grad(set_to_none=True)
        local.mean().backward()
        per_sample = gather_batch(local.detach(), world)
        self.observe(per_sample, levels.logsnr)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.opt.step()
        with torch.no_grad():
            d = ema_decay_at(cfg, self.step)
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - d)
            for be, bm in zip(self.ema.buffers(), self.model.buffers()):
                be.copy_(bm)
        self.step += 1
        return per_sample, levels.logsnr, norm

    def observe(self, per_sample: torch.Tensor, logsnr: torch.Tensor) -> None:
        """Tell an adaptive density the batch's per-sample x0 MSE: the weighted loss divided by w_x0(lambda)."""
        density, weighting, process = (self.objective[k] for k in ("density", "weighting", "process"))
        if density.adaptive:
            x0_mse = per_sample.double().cpu() / weighting.x0_weight(logsnr, process)
            density.observe(logsnr, x0_mse, process)

    # ---- checkpoints ------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint holds, on the CPU."""
        out = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        out |= {f"ema/{k}": v for k, v in self.ema.state_dict().items()}
        for i, state in self.opt.state_dict()["state"].items():
            out |= {f"optim/{i}/{k}": v for k, v in state.items()}
        out |= {f"order/{k}": v for k, v in self.order.state().items()}
        out |= {f"density/{k}": v for k, v in self.objective["density"].state().items()}
        out["rng/noise"] = self.noise.get_state()
        if self.noise_device is not None:
            out["rng/noise_device"] = self.noise_device.get_state()
        return {k: v.detach().cpu() for k, v in out.items()}

    def meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "model": self.model.config(),
            "data": data_info(self.data),
            "optim_groups": self.opt.state_dict()["param_groups"],
            "execution": self.execution.to_dict(),
        }

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.tensors(), self.meta())

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore the state saved by ``save`` (the config must already match) onto this run's device. The CUDA noise
        generator's state is restored when both runs have one (else it keeps its seed)."""

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return checkpoint_part(tensors, prefix)

        saved_world = meta.get("execution", {}).get("world_size", 1)
        if saved_world != self.execution.world.size:
            raise DifflossError(
                f"--resume: the checkpoint was written by {saved_world} process(es), this run has "
                f"{self.execution.world.size}; resume with the same number (torchrun --nproc-per-node)"
            )
        try:
            self.model.load_state_dict(part("model/"))
            self.ema.load_state_dict(part("ema/"))
            states: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in part("optim/").items():
                i, name = k.split("/", 1)
                states.setdefault(int(i), {})[name] = v
            self.opt.load_state_dict({"state": states, "param_groups": meta["optim_groups"]})
            self.order.load(part("order/"))
            self.objective["density"].load_state(part("density/"))
            self.noise.set_state(tensors["rng/noise"])
            if self.noise_device is not None and "rng/noise_device" in tensors:
                self.noise_device.set_state(tensors["rng/noise_device"])
            self.step = int(meta["step"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise DifflossError(f"the checkpoint does not fit this model ({str(e).splitlines()[0]})") from None


def gather_batch(local: torch.Tensor, world: World) -> torch.Tensor:
    """The whole batch's values from each rank's contiguous share (rank order); ``local`` itself for one process.
    Shares are equal here, so unlike ``diffloss.shards.gather_rows`` (any shares) nothing waits for the device."""
    if not world.distributed:
        return local
    import torch.distributed as dist

    parts = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(parts, local)
    return torch.cat(parts)


def checkpoint_part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of a training checkpoint under ``prefix`` (``"model/"``, ``"density/"``, ...), prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def objective_of(config: dict[str, Any]) -> dict[str, Any]:
    """The training objective of a ``TrainConfig`` dict: process, target, weighting and density (fresh state), the
    keyword arguments of ``diffusion_loss``."""
    return {
        "process": process_from_dict(config["process"]),
        "target": get_target(config["target"]),
        "weighting": weighting_from_dict(config["weighting"]),
        "density": density_from_dict(config["density"]),
    }


def trained_objective(path: str | Path) -> dict[str, Any]:
    """The objective of the training checkpoint ``path`` (a run directory or its checkpoint file), its level density
    in the state it was saved in (an adaptive density's tracked losses)."""
    path = Path(path)
    tensors, meta = load_checkpoint(path / CHECKPOINT_FILE if path.is_dir() else path)
    objective = objective_of({**TrainConfig.defaults(), **meta["config"]})
    try:
        objective["density"].load_state(checkpoint_part(tensors, "density/"))
    except (KeyError, RuntimeError, ValueError) as e:
        raise DifflossError(f"{path}: the density state does not fit its config ({str(e).splitlines()[0]})") from None
    return objective


def data_info(data: Dataset) -> dict[str, Any]:
    return {"name": data.name, "n": data.n, "shape": list(data.shape), "fingerprint": data.fingerprint}


def _read_metrics(path: Path, upto: int) -> list[str]:
    """Lines of ``metrics.jsonl`` with step <= ``upto`` (a partial last line from a kill is dropped)."""
    if not path.exists():
        return []
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= upto:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return keep


def prepare_output(cfg: TrainConfig, out: Path, *, resume: bool, overwrite: bool) -> tuple[dict, dict] | None:
    """Check the output directory against the flags; for ``resume`` return the checkpoint (tensors, meta)
    after checking that it was made under the same config. Nothing is written or removed here."""
    if resume and overwrite:
        raise DifflossError("--resume and --overwrite exclude each other; pick one")
    ckpt = out / CHECKPOINT_FILE
    if resume:
        tensors, meta = load_checkpoint(ckpt)
        old = {k: v for k, v in {**TrainConfig.defaults(), **meta["config"]}.items() if k not in TrainConfig.RESUMABLE}
        new = {k: v for k, v in cfg.to_dict().items() if k not in TrainConfig.RESUMABLE}
        diff = config_diff(old, new)
        if diff:
            raise DifflossError(
                f"--resume: the checkpoint in {out} was made under another config (differs in: {', '.join(diff)}); "
                "use the original options or another --out"
            )
        if meta["step"] > cfg.steps:
            raise DifflossError(f"--resume: the checkpoint is at step {meta['step']}, beyond --steps {cfg.steps}")
        return tensors, meta
    if out.exists() and not out.is_dir():
        raise DifflossError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DifflossError(f"--out {out} exists and is not empty; pass --resume to continue or --overwrite")
    return None


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress=None,
    data: Dataset | None = None,
    jstar: Table | None = None,
    execution: Execution | None = None,
) -> Run:
    """Train per ``cfg`` into directory ``out``; returns the finished ``Run``.

    ``progress`` is an optional callable ``(run, loss) -> None`` called after every update (the CLI's bar), ``loss``
    being the mean loss of the latest metrics line (None before the first: reading the current loss would make every
    update wait for the device). ``data`` is ``cfg.data`` if the caller has loaded it already (it is loaded
    otherwise). ``jstar`` is the J* table of the data (``diffloss.optimal.reference``), when known: each metrics line
    then also holds ``loss_floor``, the floor of the objective (``diffloss.optimal.floor``, from the table, at the
    density's current state) and ``reducible_loss`` = ``loss`` - ``loss_floor``. ``execution`` says where the run
    computes (device, precision, compile, torchrun world; default: one CPU process, fp32); only rank 0 writes.
    Everything is validated (names, sizes, the output directory, a resumed checkpoint's config) before the
    first file is written. A non-finite loss stops the run at the next metrics line, before that window's checkpoint.
    """
    out = Path(out)
    run = Run.create(cfg, data, execution)
    main = run.execution.world.is_main
    saved = prepare_output(cfg, out, resume=resume, overwrite=overwrite)
    if saved is not None:
        run.load(*saved)
        if saved[1]["data"]["fingerprint"] != run.data.fingerprint:
            raise DifflossError(f"--resume: the data behind {cfg.data!r} changed since the checkpoint was made")
    barrier(run.execution.world)  # every rank has checked OUT before rank 0 writes there
    if saved is None and overwrite and main:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    metrics = out / METRICS_FILE
    if main:
        out.mkdir(parents=True, exist_ok=True)
        config = {**cfg.to_dict(), "data_info": data_info(run.data), "execution": run.execution.to_dict()}
        write_json_atomic(out / CONFIG_FILE, config)
        write_text_atomic(metrics, "".join(line + "\n" for line in _read_metrics(metrics, run.step)))

    # a fixed density's floor never changes: computed once; an adaptive one's follows its state, at every log line
    fixed_floor = run.loss_floor(jstar) if jstar is not None and not run.objective["density"].adaptive else None
    start = time.perf_counter()
    losses, lams, last_t, last_step, last_loss = [], [], start, run.step, None
    with open(metrics, "a", encoding="utf-8") if main else contextlib.nullcontext() as log:

        def emit(record: dict[str, Any]) -> None:
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()

        while run.step < cfg.steps:
            per_sample, lam, norm = run.update()
            losses.append(per_sample)
            lams.append(lam)
            if run.step % cfg.log_every == 0 or run.step == cfg.steps:
                now = time.perf_counter()
                window = torch.cat(losses)
                check_finite(window, last_step, run.step)
                record = window_record(window.cpu(), torch.cat(lams))
                last_loss = record["loss"]
                if jstar is not None:
                    floor = fixed_floor if fixed_floor is not None else run.loss_floor(jstar)
                    record.update(loss_floor=floor, reducible_loss=record["loss"] - floor)
                emit(
                    {
                        "step": run.step,
                        **record,
                        "lr": lr_at(cfg, run.step - 1),
                        "grad_norm": norm.item(),
                        "time": now - start,
                        "samples_per_sec": cfg.batch * (run.step - last_step) / max(now - last_t, 1e-9),
                    }
                )
                losses, lams, last_t, last_step = [], [], now, run.step
            if progress is not None and main:
                progress(run, last_loss)
            if cfg.eval_every and (run.step % cfg.eval_every == 0 or run.step == cfg.steps):
                emit({"step": run.step, "eval_loss": run.eval_loss()})
            if main and (run.step % cfg.ckpt_every == 0 or run.step == cfg.steps):
                if losses:
                    check_finite(torch.cat(losses), last_step, run.step)
                run.save(out / CHECKPOINT_FILE)
    return run


def check_finite(losses: torch.Tensor, first: int, last: int) -> None:
    """Stop the run if any per-sample loss of updates ``first`` + 1 .. ``last`` is not finite."""
    if not torch.isfinite(losses).all():
        raise DifflossError(
            f"the loss became non-finite between steps {first} and {last}; lower --lr or raise --grad-clip"
        )


def window_record(losses: torch.Tensor, logsnr: torch.Tensor) -> dict[str, Any]:
    """``loss`` (mean of per-sample losses) and ``loss_by_logsnr`` (the mean within each ``LOGSNR_EDGES``
    bucket that received samples, buckets in increasing log-SNR order)."""
    buckets: dict[str, list[float]] = {}
    for v, lam in sorted(zip(losses.double().tolist(), logsnr.tolist()), key=lambda p: p[1]):
        buckets.setdefault(logsnr_bucket(lam), []).append(v)
    return {"loss": losses.double().mean().item(), "loss_by_logsnr": {k: sum(v) / len(v) for k, v in buckets.items()}}
