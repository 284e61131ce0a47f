"""Benchmark report: mean ± std per cell over seeds, beside the reference values (each labelled with its source,
``diffloss.bridge.bench.reference``), as CSV and markdown.

Input rows are per-run metric dicts, i.e. a run's ``metrics.json`` (``elbo``, ``log_z``, ``ess``, ``sinkhorn``,
``mmd``, ``emc``, ``iterations``, ``diverged_at``) plus its ``target``, ``sampler``, ``loss`` and ``seed``.
A run with ``diverged_at`` set stopped on a non-finite value: it counts in ``n_diverged`` and not in the means.
A row with ``error`` set is a run whose training failed: it counts in ``n_failed`` and not in the means.
Means and standard deviations are over seeds with the convention of ``diffloss.runs.stats`` (ddof = 1; a single
run has no std: NaN in the CSV, "mean (n=1)" in the tables). Given the expected grid, cells without any row
are reported as "not run yet" and cells with fewer runs than seeds say how many have finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffloss.bridge.bench.grid import DEFAULT_LOSSES, Cell, Preset
from diffloss.bridge.bench.reference import LOG_Z, PUBLISHED, reference_for
from diffloss.bridge.samplers import BRIDGE_SAMPLERS
from diffloss.errors import DifflossError
from diffloss.runs import Stat, csv_text, keep_notes, mean_std, save_figure
from diffloss.runs import write_report as write_files

METRICS = ("elbo", "log_z", "ess", "sinkhorn", "mmd", "emc")
HIGHER_IS_BETTER = {"elbo": True, "log_z": True, "ess": True, "emc": True, "sinkhorn": False, "mmd": False}
GROUP_KEYS = ("target", "sampler", "loss")
REFERENCE_ROWS = {
    "elbo": (("reference ELBO (source in brackets)", PUBLISHED), ("log Z (our estimate)", LOG_Z)),
    "log_z": (("log Z (our estimate)", LOG_Z),),
}


def stat_text(st: Stat) -> str:
    """Two decimals, or 3 significant digits in exponent form once |mean| or std reaches 1e5 (a run gone wrong)."""
    spec = ".3g" if max(abs(st.mean), abs(st.std) if st.n > 1 else 0.0) >= 1e5 else ".2f"
    return st.text(spec, spec, show_n=False)


@dataclass(frozen=True)
class CellSummary:
    """One (target, sampler, loss) cell over its seeds: a Stat per metric with finite values, divergences, failures
    (error messages) and, when the grid is known, the number of seeds it expects (0: unknown)."""

    target: str
    sampler: str
    loss: str
    n_runs: int
    stats: Mapping[str, Stat] = field(default_factory=dict)
    diverged_at: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()
    n_expected: int = 0

    def text(self, metric: str) -> str:
        """The markdown cell: ``mean ± std``, with divergences, failures and unfinished seeds stated (all diverged →
        the iterations; no run finished → "not run yet")."""
        if self.n_runs == 0:
            return "not run yet"
        diverged = ", ".join(str(i) for i in self.diverged_at)
        if metric not in self.stats and len(self.diverged_at) == self.n_runs >= self.n_expected:
            return f"diverged at {diverged}"
        notes = []
        if self.diverged_at:
            notes.append(f"{len(self.diverged_at)}/{self.n_runs} diverged at {diverged}")
        if self.errors:
            notes.append(f"{len(self.errors)}/{self.n_runs} failed: {'; '.join(dict.fromkeys(self.errors))}")
        if self.n_expected > self.n_runs:
            notes.append(f"{self.n_runs}/{self.n_expected} seeds run")
        if metric not in self.stats:
            return "; ".join(notes) if self.diverged_at or self.errors else "—"
        return stat_text(self.stats[metric]) + (f" ({'; '.join(notes)})" if notes else "")


def summarize(rows: Iterable[Mapping[str, Any]], expected: Sequence[Cell] = ()) -> list[CellSummary]:
    """Group per-run rows by (target, sampler, loss), in first-seen order, and reduce each metric over seeds.

    Null or non-finite metric values (undefined for the target, or a failed run) are left out of the mean.
    ``expected``: the grid's cells; its (target, sampler, loss) groups come first, in its order, each with the number
    of seeds it expects, and the groups without rows are kept (as "not run yet")."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    n_expected: dict[tuple[str, str, str], int] = {}
    for cell in expected:
        key = (cell.target, cell.sampler, cell.loss)
        groups.setdefault(key, [])
        n_expected[key] = n_expected.get(key, 0) + 1
    for row in rows:
        missing = [k for k in GROUP_KEYS if k not in row]
        if missing:
            raise DifflossError(f"a benchmark row lacks {', '.join(missing)}; rows need {', '.join(GROUP_KEYS)}")
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    out = []
    for (target, sampler, loss), runs in groups.items():
        errors = tuple(str(r["error"]) for r in runs if r.get("error") is not None)
        diverged = tuple(int(r["diverged_at"]) for r in runs if r.get("diverged_at") is not None)
        ok = [r for r in runs if r.get("diverged_at") is None and r.get("error") is None]
        stats = {}
        for metric in METRICS:
            st = mean_std(float(r[metric]) for r in ok if r.get(metric) is not None)
            if st.n:
                stats[metric] = st
        key = (target, sampler, loss)
        out.append(CellSummary(target, sampler, loss, len(runs), stats, diverged, errors, n_expected.get(key, 0)))
    return out


def to_csv(summaries: Sequence[CellSummary]) -> str:
    """One line per cell: keys, n_runs, n_diverged, n_failed, then <metric>_mean, <metric>_std, <metric>_n (empty if
    none)."""
    stat_columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")]
    rows = []
    for c in summaries:
        values = []
        for m in METRICS:
            st = c.stats.get(m)
            values += [repr(st.mean), repr(st.std), st.n] if st else ["", "", 0]
        rows.append([c.target, c.sampler, c.loss, c.n_runs, len(c.diverged_at), len(c.errors), *values])
    return csv_text([*GROUP_KEYS, "n_runs", "n_diverged", "n_failed", *stat_columns], rows)


def loss_ordering(summaries: Sequence[CellSummary], target: str, sampler: str, metric: str = "elbo") -> list[str]:
    """The losses of one (target, sampler) from best to worst mean ``metric`` (cells without it are left out)."""
    cells = [c for c in summaries if c.target == target and c.sampler == sampler and metric in c.stats]
    cells.sort(key=lambda c: c.stats[metric].mean, reverse=HIGHER_IS_BETTER[metric])
    return [c.loss for c in cells]


def _ordered(values: Iterable[str], canonical: Sequence[str]) -> list[str]:
    present = set(values)
    return [v for v in canonical if v in present] + sorted(present - set(canonical))


def metric_table(summaries: Sequence[CellSummary], metric: str) -> str:
    """Markdown table: one row per (sampler, loss), one column per target; reference rows under it for the ELBO."""
    targets = list(dict.fromkeys(c.target for c in summaries))
    by_key = {(c.target, c.sampler, c.loss): c for c in summaries}
    lines = [f"| sampler | loss | {' | '.join(targets)} |", "|---|---|" + "---|" * len(targets)]
    for sampler in _ordered((c.sampler for c in summaries), BRIDGE_SAMPLERS):
        for loss in _ordered((c.loss for c in summaries), DEFAULT_LOSSES):
            if any((t, sampler, loss) in by_key for t in targets):
                cells = [
                    by_key[(t, sampler, loss)].text(metric) if (t, sampler, loss) in by_key else "—" for t in targets
                ]
                lines.append(f"| {sampler} | {loss} | {' | '.join(cells)} |")
    for label, refs in REFERENCE_ROWS.get(metric, ()):
        values = [reference_for(refs, t) for t in targets]
        row = ["—" if r is None else f"{r.value:.2f}" + (f" ({r.note})" if r.note else "") for r in values]
        lines.append(f"| {label} | | {' | '.join(row)} |")
    return "\n".join(lines)


def ordering_notes(summaries: Sequence[CellSummary]) -> list[str]:
    """One sentence per (target, sampler) with at least two losses: our ELBO ordering of the losses, and whether it
    agrees with [BRIDGE]'s finding that rKL-LD is best."""
    notes = []
    pairs = dict.fromkeys((c.target, c.sampler) for c in summaries)
    for target, sampler in pairs:
        order = loss_ordering(summaries, target, sampler)
        if len(order) < 2 or "rkl-ld" not in order:
            continue
        verdict = "agrees" if order[0] == "rkl-ld" else "disagrees"
        cells = [c for c in summaries if (c.target, c.sampler) == (target, sampler) and "elbo" in c.stats]
        by_loss = {c.loss: c.stats["elbo"] for c in cells}  # a cell whose every run diverged has no ELBO
        first, second = by_loss[order[0]], by_loss[order[1]]
        spread = max((st.std for st in (first, second) if st.n > 1), default=0.0)
        tie = " (the top two are within one std)" if first.mean - second.mean < spread else ""
        notes.append(f"{target}, {sampler}: {' > '.join(order)} — {verdict} with the paper (rKL-LD best){tie}")
    return notes


def lv_note(summaries: Sequence[CellSummary]) -> str | None:
    """LV against rKL-LD with a learned diffusion coefficient (every run of the grid learns it): divergences and
    mean ELBOs, beside [BRIDGE]'s finding that there LV is no longer the rKL gradient and is beaten by rKL-LD."""
    runs = {loss: [c for c in summaries if c.loss == loss] for loss in ("lv", "rkl-ld")}
    if not all(any(c.n_runs for c in cells) for cells in runs.values()):
        return None
    counts = {
        loss: (sum(len(c.diverged_at) for c in cells), sum(c.n_runs for c in cells)) for loss, cells in runs.items()
    }
    ld = {(c.target, c.sampler): c.stats["elbo"].mean for c in runs["rkl-ld"] if "elbo" in c.stats}
    pairs = [
        (c.stats["elbo"].mean, ld[(c.target, c.sampler)])
        for c in runs["lv"]
        if (c.target, c.sampler) in ld and "elbo" in c.stats
    ]
    worse = sum(lv < rkl_ld for lv, rkl_ld in pairs)
    return (
        f"LV with a learned diffusion coefficient diverged in {counts['lv'][0]} of {counts['lv'][1]} runs "
        f"(rKL-LD: {counts['rkl-ld'][0]} of {counts['rkl-ld'][1]}); its mean ELBO is below rKL-LD's in {worse} of "
        f"{len(pairs)} (target, sampler) pairs. The paper: with learned diffusion coefficients (and for bridges) LV "
        "no longer has the rKL gradient, and rKL-LD beats it and trains more stably."
    )


def to_markdown(
    summaries: Sequence[CellSummary],
    preset: Preset,
    metrics: Sequence[str] = METRICS,
    command: str | None = None,
    notes: str | None = None,
) -> str:
    """The full report: budget (and how it differs from the paper's), how far the grid got, the command that
    reproduces it, one table per metric (always the ELBO), the ordering of the losses and LV's stability, and at the
    end ``notes``, a hand-written block kept from the previous report (``diffloss.runs.keep_notes``)."""
    if not summaries:
        raise DifflossError("no finished runs to report; run the benchmark first")
    b = preset.budget
    overrides = "; ".join(f"{t}: {', '.join(f'{k}={v}' for k, v in o.items())}" for t, o in preset.overrides.items())
    n_runs = sum(c.n_runs for c in summaries)
    n_expected = sum(c.n_expected for c in summaries)
    n_diverged, n_failed = sum(len(c.diverged_at) for c in summaries), sum(len(c.errors) for c in summaries)
    parts = [
        "# Bridge-sampler benchmark",
        "",
        f"Preset `{preset.name}`: {preset.description}",
        "",
        f"Budget: {b.iterations} iterations, batch {b.batch}, K={b.steps} steps, {b.optimizer} lr {b.learning_rate:g}, "
        f"clip {b.grad_clip:g}, {b.lr_schedule} decay, metrics on {b.eval_samples} samples"
        + (f" (overrides — {overrides})" if overrides else "")
        + ". Cells: mean ± std over seeds; diverged runs are listed and left out of the mean.",
        "",
        f"Runs finished: {n_runs}"
        + (f" of {n_expected}" if n_expected else "")
        + f" ({n_diverged} diverged, {n_failed} failed).",
    ]
    if command:
        parts += ["", f"Reproduce (resumes; finished cells are skipped): `{command}`"]
    present = [m for m in metrics if m == "elbo" or any(m in c.stats for c in summaries)]
    for m in present:
        parts += ["", f"## {m}", "", metric_table(summaries, m)]
    orders = ordering_notes(summaries)
    lv = lv_note(summaries)
    if orders or lv:
        parts += ["", "## Ordering of the losses (ELBO)", "", *(f"- {n}" for n in orders)]
        parts += [f"- {lv}"] if lv else []
    parts += ["", notes] if notes else []
    return "\n".join(parts) + "\n"


def plot_metric(summaries: Sequence[CellSummary], metric: str, path: str | Path) -> Path:
    """One panel per target: mean ± std of ``metric`` per (sampler, loss), with the reference values of the report
    as horizontal lines (dashed: reference ELBO, dotted: our log Z). Written atomically as an image."""
    from matplotlib.figure import Figure  # imported here: only plotting needs it

    targets = list(dict.fromkeys(c.target for c in summaries if metric in c.stats))
    if not targets:
        raise DifflossError(f"no run reported {metric!r}; nothing to plot")
    fig = Figure(figsize=(3.2 * len(targets), 3.4), layout="constrained")
    for ax, target in zip(fig.subplots(1, len(targets), squeeze=False)[0], targets):
        cells = [c for c in summaries if c.target == target and metric in c.stats]
        means = [c.stats[metric].mean for c in cells]
        stds = [c.stats[metric].std if c.stats[metric].n > 1 else 0.0 for c in cells]
        ax.errorbar(range(len(cells)), means, yerr=stds, fmt="o", capsize=3)
        ax.set_xticks(range(len(cells)), [f"{c.sampler}\n{c.loss}" for c in cells], fontsize=7)
        for style, (label, refs) in zip(("--", ":"), REFERENCE_ROWS.get(metric, ())):
            ref = reference_for(refs, target)
            if ref is not None:
                ax.axhline(ref.value, linestyle=style, color="gray", label=ref.note or label)
        ax.set_title(target)
        ax.set_ylabel(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return save_figure(fig, path)


def report_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """The markdown report ``path`` (must end in ``.md``) and, beside it, its CSV and ELBO plot."""
    path = Path(path)
    if path.suffix != ".md":
        raise DifflossError(f"the report path must end in .md (the CSV and plot go beside it), got {str(path)!r}")
    return path, path.with_suffix(".csv"), path.with_name(f"{path.stem}_elbo.png")


def write_report(
    rows: Iterable[Mapping[str, Any]],
    preset: Preset,
    path: str | Path,
    expected: Sequence[Cell] = (),
    command: str | None = None,
) -> list[Path]:
    """Write the markdown report to ``path``, the CSV and, when any run has an ELBO, the plot beside it (see
    ``report_paths``; each atomically); return the paths written. ``expected``: the grid (see ``summarize``);
    ``command``: the command line that reproduces the report. The hand-written block between ``NOTES_BEGIN`` and
    ``NOTES_END`` of an existing report at ``path`` is kept (an empty block is written for new reports)."""
    md, _, plot = report_paths(path)
    summaries = summarize(rows, expected)
    paths = write_files(
        md, to_markdown(summaries, preset, command=command, notes=keep_notes(md)), table=to_csv(summaries)
    )
    if any("elbo" in c.stats for c in summaries):
        paths.append(plot_metric(summaries, "elbo", plot))
    return paths
