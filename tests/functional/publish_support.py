"""Models trained on scikit-learn's bundled data sets for the publish tests,
fitted once per test session."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@functools.cache
def wine() -> tuple[pd.DataFrame, np.ndarray]:
    """The wine data as a DataFrame with a categorical column ("band", the
    alcohol level in words) and the class names as labels."""
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["band"] = pd.cut(frame["alcohol"], 3, labels=["low", "mid", "high"]).astype(
        str
    )
    labels = np.asarray(data.target_names)[data.target]
    return frame, labels


def wine_pipeline(classifier: Any) -> Pipeline:
    """Scaling for the numbers, one-hot for the band, then ``classifier``, fitted."""
    frame, labels = wine()
    numbers = [column for column in frame.columns if column != "band"]
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), numbers),
            ("band", OneHotEncoder(handle_unknown="ignore"), ["band"]),
        ]
    )
    return Pipeline([("columns", columns), ("classifier", classifier)]).fit(
        frame, labels
    )


@functools.cache
def wine_logistic() -> Pipeline:
    return wine_pipeline(LogisticRegression(max_iter=1000))


@functools.cache
def wine_forest() -> Pipeline:
    return wine_pipeline(RandomForestClassifier(n_estimators=50, random_state=0))


def wine_hist_boosting() -> Pipeline:
    return wine_pipeline(HistGradientBoostingClassifier(max_iter=20))


@functools.cache
def diabetes() -> tuple[np.ndarray, np.ndarray, GradientBoostingRegressor]:
    data = load_diabetes()
    model = GradientBoostingRegressor(n_estimators=50, random_state=0)
    return data.data, data.target, model.fit(data.data, data.target)


@functools.cache
def iris_boosting() -> tuple[np.ndarray, np.ndarray, GradientBoostingClassifier]:
    data = load_iris()
    model = GradientBoostingClassifier(n_estimators=30, random_state=0)
    return data.data, data.target, model.fit(data.data, data.target)


@functools.cache
def cancer_lightgbm() -> tuple[np.ndarray, np.ndarray, Any]:
    import lightgbm

    data = load_breast_cancer()
    model = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1, random_state=0)
    return data.data, data.target, model.fit(data.data, data.target)
