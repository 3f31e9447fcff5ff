"""The Layer-1 ensemble's training configuration (recorded in every bundle's manifest)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EnsembleConfig"]


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.05
    folds: int = 5
    test_frac: float = 0.5  # share of the data covered by the walk-forward test blocks
    calib_frac: float = 0.2  # share of each training set held out (the latest part) for calibration
    embargo: int | None = None  # bars; None = the label horizon
    threshold: float = 0.95
    threads: int = 2
    seed: int = 0
    #: fit the QuantilePrediction module's LightGBM quantile regressors (tau = 0.1..0.9) with the bundle
    #: (:mod:`~fxgate.models.ensemble.quantiles`); kept cheap: few small trees
    quantiles: bool = True
    quantile_trees: int = 50
    quantile_leaves: int = 7

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0.5, 1), got {self.threshold}")
        if self.folds < 1 or not 0 < self.test_frac < 1 or not 0 < self.calib_frac < 0.5:
            raise ValueError("need folds >= 1, 0 < test_frac < 1 and 0 < calib_frac < 0.5")
        if self.quantile_trees < 1 or self.quantile_leaves < 2:
            raise ValueError(
                f"need quantile_trees >= 1 and quantile_leaves >= 2, got {self.quantile_trees}, {self.quantile_leaves}"
            )
