"""``fxgate fit``: the Layer-1 ensemble, fitted walk-forward into a verified bundle, with its out-of-sample table."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fxgate.engine.cli._options import load_kwargs, load_options
from fxgate.engine.loader import load_bars, sample_path
from fxgate.models.ensemble import MODEL_NAMES, EnsembleConfig, TreeEnsemble
from fxgate.models.labels import LabelSpec

__all__ = ["fit_cmd"]


@click.command("fit")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Bar file (any format load_bars reads). Default: the bundled EURUSD H1 sample.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    default=Path("fxgate-bundle"),
    show_default=True,
    help="Bundle directory to write.",
)
@click.option("--horizon", type=click.IntRange(min=1), default=1, show_default=True, help="Label horizon in bars.")
@click.option("--label", "label_kind", type=click.Choice(["next", "triple-barrier"]), default="next", show_default=True)
@click.option("--folds", type=click.IntRange(min=1), default=5, show_default=True, help="Walk-forward test blocks.")
@click.option(
    "--threshold", type=float, default=0.95, show_default=True, help="Layer-1 confidence each model must reach."
)
@click.option(
    "--spread",
    type=float,
    default=0.0,
    show_default=True,
    help="Cost in price units for files without a spread column (e.g. 0.00008 = 0.8 pip on EURUSD).",
)
@click.option("--estimators", type=click.IntRange(min=1), default=300, show_default=True, help="Trees per booster.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@load_options
def fit_cmd(
    data_path: Path | None,
    out: Path,
    horizon: int,
    label_kind: str,
    folds: int,
    threshold: float,
    spread: float,
    estimators: int,
    threads: int,
    fmt: str,
    tz: str | None,
    symbol: str | None,
    policy: str,
    encoding: str | None,
    decimal: str,
) -> None:
    """Fit the Layer-1 ensemble walk-forward and write a verified bundle.

    Prints out-of-sample figures per fold: accuracy with its Wilson 95% interval, log loss, AUC, IC and rank IC
    per booster, and the coverage and precision of the all-agree >= threshold rule.
    """
    console = Console()
    path = data_path or sample_path()
    bars = load_bars(path, **load_kwargs(fmt, tz, symbol, policy, encoding, decimal))
    console.print(f"data: {bars!r} from {path}")
    if bars.spread is None:
        console.print(f"cost: no spread column; labels net of an assumed spread of {spread} (--spread)")
    spec = LabelSpec(label_kind, horizon, default_spread=spread)  # type: ignore[arg-type]
    cfg = EnsembleConfig(n_estimators=estimators, folds=folds, threshold=threshold, threads=threads)
    ens = TreeEnsemble()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False
    ) as prog:
        task = prog.add_task("features and labels", total=None)
        report = ens.fit(bars, spec, cfg, progress=lambda msg: prog.update(task, description=msg))
        prog.update(task, description="writing bundle")
        ens.save(out)
        prog.update(task, description="done")
    _print_fit_report(console, report, threshold)
    console.print(f"bundle: {out} (sha256 {ens.bundle_hash[:16]}…)")


def _print_fit_report(console: Console, report: dict, threshold: float) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def ci(t: tuple[float, float] | list[float]) -> str:
        return "" if t[0] != t[0] else f"[{100 * t[0]:.1f}, {100 * t[1]:.1f}]"

    lines = [
        "Layer 1, out of sample (walk-forward, purged). Accuracy counts bars whose move covered the cost.",
        f"{'fold':<5}{'bars':>6}  {'model':<9} {'accuracy [95% CI]':<22}{'logloss':>8}{'AUC':>7}{'IC':>8}"
        f"{'RankIC':>8}{'max conf':>10}",
    ]
    rows = [(str(f["fold"]), f) for f in report["folds"]] + [("all", report["overall_oos"])]
    for label, f in rows:
        for i, m in enumerate(MODEL_NAMES):
            r = f[m]
            lines.append(
                f"{label if i == 0 else '':<5}{f['decided_bars'] if i == 0 else '':>6}  {m:<9} "
                f"{pct(r['accuracy']) + ' ' + ci(r['accuracy_ci95']):<22}{r['logloss']:>8.4f}{r['auc']:>7.3f}"
                f"{r['ic']:>+8.3f}{r['rank_ic']:>+8.3f}{r['max_confidence']:>10.3f}"
            )
        rule = f["rule"]
        lines.append(
            f"{'':<13}rule (all agree, each >= {threshold}): {rule['signals']} signals in {f['bars']} bars "
            f"(coverage {pct(rule['coverage'])}), precision {pct(rule['precision'])} {ci(rule['precision_ci95'])}"
        )
    console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    if report.get("silence"):
        console.print(f"note: {report['silence']}", highlight=False, soft_wrap=True)
