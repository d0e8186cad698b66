"""Hyperparameter tuning on Optuna with the doctor as pruner: ``traindoctor.tune(train_fn, space, ...)``."""
from .pruning import PRUNE_CODES, SickWatch, Verdict
from .space import Param, SpaceError, parse_param
from .study import TrialDoctor, TuneResult, tune

__all__ = ["PRUNE_CODES", "Param", "SickWatch", "SpaceError", "TrialDoctor", "TuneResult", "Verdict", "parse_param",
           "tune"]
