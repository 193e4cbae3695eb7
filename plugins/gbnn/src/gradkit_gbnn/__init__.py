"""gradkit plugin: GBNN (Emami & Martinez-Munoz).  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="Sequential Training of Neural Networks with Gradient Boosting", arxiv="1909.12098", year=2019)

_DEFAULTS = {"total_units": 200, "units_per_step": 1, "eta": 1.0, "subsample": 0.5, "solver": "lbfgs",
             "max_iter": 200, "activation": "logistic"}


@hookimpl
def gradkit_register_trainers(register):
    register(
        "gbnn-classifier",
        "gradkit_gbnn.boosting:GBNNClassifier",
        summary="GBNN classifier: one-hidden-layer NN grown by gradient boosting (log-exponential / multinomial loss), "
                "scikit-learn API, exported as one torch network",
        paper=PAPER,
        tags=["scikit-learn", "gradient-boosting", "classification"],
        defaults=dict(_DEFAULTS),
    )
    register(
        "gbnn-regressor",
        "gradkit_gbnn.boosting:GBNNRegressor",
        summary="GBNN regressor: one-hidden-layer NN grown by gradient boosting on the squared loss, scikit-learn API",
        paper=PAPER,
        tags=["scikit-learn", "gradient-boosting", "regression"],
        defaults=dict(_DEFAULTS),
    )
    register(
        "gb-nn",
        "gradkit_gbnn.head:GBHeadTrainer",
        summary="GBNN 'deep variant': gradient-boost the last hidden layer + output on a frozen torch feature extractor",
        paper=PAPER,
        tags=["gradient-boosting", "head"],
        defaults={"total_units": 200, "units_per_step": 1, "eta": 1.0, "subsample": 0.5},
    )


@hookimpl
def gradkit_register_reproductions(register):
    register(
        "gbnn",
        "gradkit_gbnn.reproduce:run",
        summary="GBNN vs sklearn MLPs (adam/lbfgs/sgd), a torch MLP and HistGradientBoosting, 5-fold CV on sklearn "
                "datasets; truncation curve; boosted head on a digits CNN",
        paper=PAPER,
    )


@hookimpl
def gradkit_register_benchmarks(register):
    register(
        "gbnn",
        "gradkit_gbnn.bench:run",
        summary="GBNN fit/predict time vs sklearn MLP, HistGradientBoosting and the authors' gbnn package",
        paper=PAPER,
    )
