"""Text forms of a ``diffloss optimal-loss`` report (``OptimalLossResult.to_json``): a CSV and a terminal table."""

from __future__ import annotations

import csv
import io
from typing import Any

CSV_COLUMNS = ("sigma", "logsnr", "t", "x0_mse", "stderr", "upper95", "loss", "loss_stderr")


def csv_text(doc: dict[str, Any]) -> str:
    """One row per level, ``CSV_COLUMNS``; numbers at full precision (repr), empty cells for nulls."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for lv in doc["levels"]:
        w.writerow(["" if lv[c] is None else repr(lv[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def table_text(doc: dict[str, Any]) -> str:
    """The table ``diffloss optimal-loss`` prints: one line per level, the data variance, the objective's floor.

    Where the estimate is 0 +- 0 (the rare-event regime) the stderr column shows the 95% upper bound instead,
    as ``<BOUND``; a level the process never reaches shows ``-`` for its time."""
    tgt = doc["target"]
    lines = [
        f"optimal loss of {doc['data']['name']} (N = {doc['n_data']}, D = {doc['dim']}), {doc['estimator']}, "
        f"{doc['queries']} queries; per-dimension MSE; process {doc['process']}",
        f"{'s':>10} {'logSNR':>8} {'t':>10} {'J*_x0':>12} {'stderr':>10} {'J*_' + tgt:>12}",
    ]
    for lv in doc["levels"]:
        t = "-" if lv["t"] is None else f"{lv['t']:.4g}"
        err = f"<{lv['upper95']:.2g}" if lv["upper95"] is not None else f"{lv['stderr']:.2g}"
        lines.append(
            f"{lv['sigma']:>10.4g} {lv['logsnr']:>8.3f} {t:>10} {lv['x0_mse']:>12.5g} {err:>10} {lv['loss']:>12.5g}"
        )
    lines.append(f"data variance per dim (the s -> ∞ limit of J*_x0): {doc['data']['variance_per_dim']:.5g}")
    if any(lv["upper95"] is not None for lv in doc["levels"]):
        lines.append(
            "<B: no query saw posterior weight off its source row (estimate 0 ± 0); B is a 95% upper bound on J*"
        )
    obj = doc.get("objective")
    if obj is not None:
        lines.append(
            f"objective floor (target {obj['target']}, weighting {obj['weighting']['name']}, density "
            f"{obj['density']['name']}): {obj['total']:.6g} ± {obj['stderr']:.2g} (quadrature error "
            f"{obj['quadrature_error']:.1g}, {obj['nodes']} levels)"
        )
    return "\n".join(lines)
