"""Run-time benchmark: every unlearner (and SalUn's saliency-mask pass) relative to retraining.

Same original MLP (the reproduction's 600-image digits setting), same random-10 % forget split, one process; times are medians
of ``repeats`` runs and are reported as ratios to Retrain's time (the paper's RTE
comparison).  No external unlearning library is used as a reference: none on PyPI
ships SalUn (see README).
"""

from __future__ import annotations

import copy
import statistics
from typing import Optional

import torch

from gradkit_core.results import Result


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from gradkit_support.data import loader, set_seed

    from . import unlearn as U
    from .metrics import timed
    from .reproduce import METHODS, TRAIN_EPOCHS, TRAIN_LR, _data, _model, _split, _train

    torch.set_num_threads(1)
    repeats = 1 if quick else 3
    xtr, ytr, _, _ = _data()
    set_seed(seed)
    original = _train(_model(seed), xtr, ytr, seed=seed)
    (xf, yf), (xr, yr) = _split("random", xtr, ytr, seed)
    F_, R_ = loader(xf, yf, 64, seed=seed), loader(xr, yr, 64, seed=seed)

    def med(fn):
        return statistics.median(timed(fn)[1] for _ in range(repeats))

    res = Result("salun", title="Unlearning run time (RTE) relative to retraining, digits MLP, random 10 %")
    t_retrain = med(lambda: U.Retrain(_model(seed), lr=TRAIN_LR, epochs=TRAIN_EPOCHS, seed=seed).unlearn(F_, R_))
    res.add_row(method="Retrain", seconds=round(t_retrain, 4), ratio_to_retrain=1.0)
    t_mask = med(lambda: U.saliency_mask(copy.deepcopy(original), F_, ratio=0.5))
    res.add_row(method="SalUn mask only", seconds=round(t_mask, 4), ratio_to_retrain=round(t_mask / t_retrain, 4))
    times = {}
    for name, (cls, kw) in METHODS.items():
        times[name] = med(lambda: getattr(U, cls)(copy.deepcopy(original), seed=seed, **kw).unlearn(F_, R_))
        res.add_row(method=name, seconds=round(times[name], 4), ratio_to_retrain=round(times[name] / t_retrain, 4))
    res.add_claim("SalUn (mask + 10 epochs) is faster than retraining (paper: RTE far below Retrain)",
                  times["SalUn"] < t_retrain, f"{times['SalUn']:.3f}s vs {t_retrain:.3f}s")
    res.add_claim("SalUn's overhead over RL is the mask pass plus masking (ratio SalUn/RL < 2)",
                  times["SalUn"] / times["RL"] < 2.0, f"{times['SalUn'] / times['RL']:.2f}x")
    res.meta.update(repeats=repeats, threads=1, retrain_epochs=TRAIN_EPOCHS, unlearn_epochs=10)
    return res
