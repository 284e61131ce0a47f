"""The reference's configuration of its best runs (``--preset paper``), one row per (target, sampler, loss), and
the same at a CPU budget (``--preset medium``: fewer iterations, nothing else changed, see ``MEDIUM``).

Reference: sebaleh87/dds_optim (Sanokowski et al. 2025), the commands in ``Configs/Sweeps/BestRunsSweeps/<T>.md``
(CMCD) and ``<T>_DBS.md`` (DBS), whose defaults come from ``main.py`` and ``SDE_Losses/Base_SDE_Loss.py``. Every
value below names the file it was read from. Losses map to the sections of those files: rkl-ld to "LD", lv to "LV",
rkl-r to "rKL Frozen" (the reference ran rKL-R only with ``--learn_SDE_params_mode prior_only``: the diffusion
coefficient frozen, the prior learned). The reference has no DIS and no TB best runs and no runs on ionosphere,
gaussian or many_well: asking the preset for those is an error.

Units. ``init_std`` is the prior's std (``--sigma_init``). ``beta_max`` is the reference's per-step noise std at
initialisation, sigma_diff * beta_max with sigma_diff = 1 and dt = 1 (``SDE_Losses/SDE_Types/Bridge_SDE.py``:
``get_diffusion``, ``sample_noise``); ``diffusion_sigma`` turns it into our diffusion coefficient sigma, whose
per-step noise variance is s^2 (1 - exp(-sigma^2 / (K s^2))) for a prior std s (``diffloss.bridge.samplers``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from diffloss.errors import DifflossError

BEST_RUNS = "Configs/Sweeps/BestRunsSweeps"
MAIN = "main.py"
OPTIMIZER = "SDE_Losses/Base_SDE_Loss.py"

# Settings shared by every best run: (value, where it was read).
COMMON: dict[str, tuple[Any, str]] = {
    "steps": (128, f"{BEST_RUNS}/*.md: --n_integration_steps 128"),
    "iters": (40_000, f"{BEST_RUNS}/*.md: --N_anneal 4000 (epochs) x {MAIN}: --steps_per_epoch default 10"),
    "eval_every": (500, f"{MAIN}: --epochs_per_eval default 50 x --steps_per_epoch default 10 (best ELBO kept)"),
    "grad_clip": (1.0, f"{MAIN}: --clip_value default 1 (optax.clip_by_global_norm in every chain, {OPTIMIZER})"),
    "optimizer": ("radam", f"{OPTIMIZER}: optax.scale_by_radam (optimizer 'ADAM')"),
    "lr_floor": (0.1, f"{OPTIMIZER}: initialize_optimizer, lr_min = l_max / 10; {MAIN}: --lr_schedule cosine"),
    "score_gate": (True, f"{MAIN}: --use_interpol_gradient default True"),
    "network": (
        "pis",
        f"{BEST_RUNS}/*_DBS.md, GMM.md, MoS.md: --base_net PISgradnet --n_hidden 64 (Networks/Pisgradnet.py, "
        "num_layers 2; diffloss.bridge.pisnet); the CMCD commands of Seeds, Sonar, Credit, Brownian, LGCP and Funnel "
        f"give no --base_net, so {MAIN}'s default 'Vanilla' (Networks/VanillaBaseModel.py) ran there: not built here, "
        "pis instead",
    ),
    "separate_chains": (
        True,
        f"{OPTIMIZER}: three optax chains (network at --lr, SDE parameters at --SDE_lr, CMCD interpolation at "
        "--Interpol_lr), each clipped at global norm 1 on its own (diffloss.bridge.chains)",
    ),
    "sde_lr": ("lr", f"{BEST_RUNS}/*.md: --SDE_lr equals --lr in every best run"),
    "dbs_networks": (
        2,
        f"{BEST_RUNS}/*_DBS.md: --Bridge_Type DBS, Networks/Pisgradnet.py builds a forward network besides the "
        "reverse one (diffloss.bridge.networks.NetworkPair); DBS only",
    ),
    "dbs_annealed_score": (
        True,
        f"{BEST_RUNS}/*_DBS.md: --use_interpol_gradient, the gate's input is the annealed score "
        "(SDE_Losses/SDE_Types/Base_SDE.py: apply_model, grads_T1) on the interpolation schedule, fixed at "
        "--Interpol_lr 0.0 (linear); DBS only (CMCD always gates its annealed score)",
    ),
}


@dataclass(frozen=True)
class PaperRow:
    """One best run of the reference: its prior std, per-step noise std beta_max, network lr, CMCD interpolation
    lr (``interpol_lr``, the lr of the interpolation chain; DBS has none), batch, whether the diffusion is frozen,
    and its file and section."""

    init_std: float
    beta_max: float
    lr: float
    interpol_lr: float
    batch: int
    frozen: bool
    source: str


# The reference's best runs, one per (target, sampler, loss), read from the commands in BestRunsSweeps/<file> under
# the section named: --sigma_init, --beta_max, --lr, --Interpol_lr, --batch_size. rkl-r rows are the "rKL Frozen"
# runs (--learn_SDE_params_mode prior_only), the others learn the diffusion.
PAPER_TABLE: tuple[tuple[str, str, str, float, float, float, float, int, str, str], ...] = (
    # target, sampler, loss, init_std, beta_max, lr, interpol_lr, batch, file, section
    ("seeds", "cmcd", "rkl-ld", 0.5, 0.1, 0.005, 0.001, 2000, "Seeds.md", "LD"),
    ("seeds", "cmcd", "lv", 0.5, 0.1, 0.005, 0.001, 2000, "Seeds.md", "LV"),
    ("seeds", "cmcd", "rkl-r", 1.0, 0.1, 0.002, 0.001, 2000, "Seeds.md", "rKL Frozen"),
    ("seeds", "dbs", "rkl-ld", 0.2, 0.1, 0.001, 0.0, 2000, "Seeds_DBS.md", "LD"),
    ("seeds", "dbs", "lv", 0.2, 0.1, 0.0005, 0.0, 2000, "Seeds_DBS.md", "LV"),
    ("seeds", "dbs", "rkl-r", 1.0, 0.1, 0.001, 0.0, 2000, "Seeds_DBS.md", "rKL Frozen"),
    ("sonar", "cmcd", "rkl-ld", 0.5, 0.1, 0.005, 0.001, 2000, "Sonar.md", "LD"),
    ("sonar", "cmcd", "lv", 0.5, 0.1, 0.005, 0.001, 2000, "Sonar.md", "LV"),
    ("sonar", "cmcd", "rkl-r", 1.0, 0.1, 0.005, 0.001, 2000, "Sonar.md", "rKL frozen"),
    ("sonar", "dbs", "rkl-ld", 0.2, 0.1, 0.001, 0.0, 2000, "Sonar_DBS.md", "LD"),
    ("sonar", "dbs", "lv", 0.2, 0.1, 0.0005, 0.0, 2000, "Sonar_DBS.md", "LV"),
    ("sonar", "dbs", "rkl-r", 1.0, 0.1, 0.001, 0.0, 2000, "Sonar_DBS.md", "rKL frozen"),
    ("german_credit", "cmcd", "rkl-ld", 0.5, 0.01, 0.005, 0.001, 2000, "Credit.md", "LD"),
    ("german_credit", "cmcd", "lv", 0.5, 0.01, 0.002, 0.001, 2000, "Credit.md", "LV Diverges"),
    ("german_credit", "cmcd", "rkl-r", 0.5, 0.01, 0.005, 0.001, 2000, "Credit.md", "rKL frozen"),
    ("german_credit", "dbs", "rkl-ld", 0.2, 0.01, 0.001, 0.0, 2000, "Credit_DBS.md", "LD"),
    ("german_credit", "dbs", "lv", 0.2, 0.01, 0.001, 0.0, 2000, "Credit_DBS.md", "LV"),
    ("german_credit", "dbs", "rkl-r", 1.0, 0.05, 0.001, 0.0, 2000, "Credit_DBS.md", "rKL frozen"),
    ("brownian", "cmcd", "rkl-ld", 0.5, 0.1, 0.005, 0.001, 2000, "Brownian.md", "LD"),
    ("brownian", "cmcd", "lv", 0.5, 0.05, 0.001, 0.001, 2000, "Brownian.md", "LV"),
    ("brownian", "cmcd", "rkl-r", 0.5, 0.05, 0.005, 0.001, 2000, "Brownian.md", "rKL frozen"),
    ("brownian", "dbs", "rkl-ld", 0.2, 0.05, 0.001, 0.0, 2000, "Brownian_DBS.md", "LD"),
    ("brownian", "dbs", "lv", 0.2, 0.05, 0.001, 0.0, 2000, "Brownian_DBS.md", "LV"),
    ("brownian", "dbs", "rkl-r", 0.2, 0.05, 0.001, 0.0, 2000, "Brownian_DBS.md", "rKL frozen"),
    ("lgcp", "cmcd", "rkl-ld", 1.0, 0.3, 0.005, 0.001, 300, "LGCP.md", "LD"),
    ("lgcp", "cmcd", "lv", 1.0, 0.1, 0.005, 0.001, 300, "LGCP.md", "LV"),
    ("lgcp", "cmcd", "rkl-r", 1.0, 0.3, 0.005, 0.001, 300, "LGCP.md", "rKL Frozen"),
    ("lgcp", "dbs", "rkl-ld", 1.0, 0.3, 0.0001, 0.0, 300, "LGCP_DBS.md", "LD"),
    ("lgcp", "dbs", "lv", 1.0, 0.3, 0.0005, 0.0, 300, "LGCP_DBS.md", "LV"),
    ("lgcp", "dbs", "rkl-r", 1.0, 0.1, 0.0005, 0.0, 300, "LGCP_DBS.md", "rKL Frozen"),
    ("funnel", "cmcd", "rkl-ld", 1.0, 0.3, 0.005, 0.001, 2000, "Funnel.md", "LD"),
    ("funnel", "cmcd", "lv", 0.5, 0.1, 0.002, 0.001, 2000, "Funnel.md", "LV"),
    ("funnel", "cmcd", "rkl-r", 1.0, 0.3, 0.001, 0.001, 2000, "Funnel.md", "rKL Frozen"),
    ("funnel", "dbs", "rkl-ld", 1.0, 0.3, 0.0005, 0.0, 2000, "Funnel_DBS.md", "LD"),
    ("funnel", "dbs", "lv", 1.0, 0.1, 5e-05, 0.0, 2000, "Funnel_DBS.md", "LV"),
    ("funnel", "dbs", "rkl-r", 1.0, 0.3, 0.0005, 0.0, 2000, "Funnel_DBS.md", "rKL Frozen"),
    ("gmm40", "cmcd", "rkl-ld", 80.0, 1.0, 1e-05, 0.001, 2000, "GMM.md", "LD new"),
    ("gmm40", "cmcd", "lv", 80.0, 1.0, 5e-05, 0.01, 2000, "GMM.md", "LV new"),
    ("gmm40", "cmcd", "rkl-r", 80.0, 1.0, 1e-05, 0.01, 2000, "GMM.md", "rKL frozen"),
    ("gmm40", "dbs", "rkl-ld", 80.0, 1.5, 1e-05, 0.0, 2000, "GMM_DBS.md", "LD"),
    ("gmm40", "dbs", "lv", 80.0, 1.5, 1e-05, 0.0, 2000, "GMM_DBS.md", "LV"),
    ("gmm40", "dbs", "rkl-r", 80.0, 1.5, 1e-05, 0.0, 2000, "GMM_DBS.md", "rKL frozen"),
    ("mos", "cmcd", "rkl-ld", 15.0, 1.0, 1e-05, 0.01, 2000, "MoS.md", "LD"),
    ("mos", "cmcd", "lv", 15.0, 1.5, 1e-05, 0.001, 2000, "MoS.md", "LV"),
    ("mos", "cmcd", "rkl-r", 15.0, 1.0, 0.0001, 0.01, 2000, "MoS.md", "rKL frozen"),
    ("mos", "dbs", "rkl-ld", 15.0, 1.0, 5e-06, 0.0, 2000, "MoS_DBS.md", "LD"),
    ("mos", "dbs", "lv", 15.0, 1.0, 0.0001, 0.0, 2000, "MoS_DBS.md", "LV"),
    ("mos", "dbs", "rkl-r", 15.0, 1.5, 1e-05, 0.0, 2000, "MoS_DBS.md", "rKL frozen"),
)

PAPER: dict[tuple[str, str, str], PaperRow] = {
    (target, sampler, loss): PaperRow(
        std, beta, lr, ilr, batch, loss == "rkl-r", f"{BEST_RUNS}/{file}, section '{sec}'"
    )
    for target, sampler, loss, std, beta, lr, ilr, batch, file, sec in PAPER_TABLE
}


def paper_row(target: str, sampler: str, loss: str) -> PaperRow:
    """The reference's best run for (target, sampler, loss), or a one-line DifflossError naming what it has."""
    row = PAPER.get((target, sampler, loss))
    if row is None:
        have = sorted({f"{t}/{s}" for t, s, _ in PAPER})
        raise DifflossError(
            f"--preset paper: the reference has no best run for target {target!r}, sampler {sampler!r}, loss "
            f"{loss!r}; it has target/sampler {', '.join(have)}, each with losses rkl-ld, lv, rkl-r"
        )
    return row


def diffusion_sigma(beta_max: float, init_std: float, steps: int) -> float:
    """Our diffusion coefficient sigma whose per-step noise std equals the reference's ``beta_max`` (same units as
    x) under a prior of std ``init_std`` and K = ``steps``: s^2 (1 - exp(-sigma^2 / (K s^2))) = beta_max^2."""
    if not 0 < beta_max < init_std:
        raise DifflossError(
            f"--preset paper: per-step noise std {beta_max} must lie in (0, prior std {init_std}); give --init-sigma"
        )
    return math.sqrt(-steps * init_std**2 * math.log1p(-((beta_max / init_std) ** 2)))


def paper_options(target: str, sampler: str, loss: str, **overrides: Any) -> dict[str, Any]:
    """The ``make_config`` options of the preset for (target, sampler, loss), with ``overrides`` (options given
    explicitly) on top (the DBS-only settings of ``COMMON`` for DBS only; without the score gate none annealed,
    with one chain no interpolation lr). Unless ``init_sigma`` is overridden,
    it is derived from the reference's per-step noise std at the final ``init_std`` and ``steps``."""
    row = paper_row(target, sampler, loss)
    options = {
        "steps": COMMON["steps"][0],
        "iters": COMMON["iters"][0],
        "eval_every": COMMON["eval_every"][0],
        "batch": row.batch,
        "lr": row.lr,
        "lr_floor": COMMON["lr_floor"][0],
        "init_std": row.init_std,
        "learn_sigma": not row.frozen,
        "score_gate": COMMON["score_gate"][0],
        "network": COMMON["network"][0],
        "separate_chains": COMMON["separate_chains"][0],
        "interpol_lr": row.interpol_lr,
        **(
            {"dbs_networks": COMMON["dbs_networks"][0], "annealed_gate": COMMON["dbs_annealed_score"][0]}
            if sampler == "dbs"
            else {}
        ),
        **overrides,
    }
    if not options["separate_chains"] and "interpol_lr" not in overrides:
        options["interpol_lr"] = None  # one chain: one lr
    if sampler == "dbs" and "annealed_gate" not in overrides:
        options["annealed_gate"] = options["annealed_gate"] and options["score_gate"]  # no gate: nothing to anneal
    if options.get("init_sigma") is None:
        options["init_sigma"] = diffusion_sigma(row.beta_max, options["init_std"], options["steps"])
    return options


# --preset medium: the paper preset with these changes, and only these: (value, what the paper has and why).
MEDIUM: dict[str, tuple[Any, str]] = {
    "iters": (
        200,
        "paper 40k; 200x fewer, to fit 9 Seeds runs at batch 2000 and K = 128 into about an hour of this shared "
        "2-core machine (0.5-1 step per second and process); the cosine decay to lr/10 is compressed into them",
    ),
    "eval_every": (25, "paper 500 (of 40k); scaled down so the best checkpoint is chosen among 8 evaluations"),
}
TABLE_PRESETS = ("paper", "medium")


def preset_options(preset: str, target: str, sampler: str, loss: str, **overrides: Any) -> dict[str, Any]:
    """``paper_options`` of the named preset ("paper", or "medium": paper with the changes of ``MEDIUM``), with
    ``overrides`` on top."""
    if preset not in TABLE_PRESETS:
        raise DifflossError(f"--preset: {preset!r} is not one of {', '.join(TABLE_PRESETS)}")
    changes = {k: v for k, (v, _) in MEDIUM.items()} if preset == "medium" else {}
    return paper_options(target, sampler, loss, **{**changes, **overrides})


def describe_preset(preset: str, target: str, sampler: str, loss: str) -> list[str]:
    """The preset for (target, sampler, loss) as lines 'name = value  (source)', for ``--dry-run``; "medium" adds
    what it changes."""
    row = paper_row(target, sampler, loss)
    opts = preset_options(preset, target, sampler, loss)
    lines = [
        f"init_std = {row.init_std}  (--sigma_init, {row.source})",
        f"beta_max = {row.beta_max}  (--beta_max, per-step noise std at init, {row.source}) "
        f"-> init_sigma = {opts['init_sigma']:.6g} at K = {opts['steps']}",
        f"lr = {row.lr}  (--lr, {row.source})",
        f"batch = {row.batch}  (--batch_size, {row.source})",
        f"learn_sigma = {not row.frozen}  ({'--learn_SDE_params_mode prior_only, ' if row.frozen else ''}{row.source})",
        f"interpol_lr = {row.interpol_lr}  (--Interpol_lr, {row.source}"
        f"{'; CMCD only, DBS has no interpolation parameters' if sampler == 'dbs' else ''})",
    ]
    lines += [f"{k} = {v}  ({src})" for k, (v, src) in COMMON.items()]
    if preset == "medium":
        lines += [f"medium changes {k} = {opts[k]}  ({why})" for k, (_, why) in MEDIUM.items()]
    return lines


__all__ = [
    "COMMON",
    "PAPER",
    "PAPER_TABLE",
    "MEDIUM",
    "PaperRow",
    "TABLE_PRESETS",
    "describe_preset",
    "diffusion_sigma",
    "paper_options",
    "paper_row",
    "preset_options",
]
