"""Estimators of the geometry summaries (dir-CDNV, CDNV, ratio, mean gap) and their intervals.

Modules: ``result`` (GeometryEstimate), ``plugin`` (the authors' plug-in), ``debiased`` (the default),
``crossfit``, ``jackknife`` (intervals of the debiased summaries), ``bootstrap`` (intervals of the
plug-in and crossfit summaries), ``pairs`` (median |cos| intervals between labelings), ``validate``.
See docs, Methods, Estimators.
"""
from __future__ import annotations

from dncsim.analysis.estimators.bootstrap import bootstrap_summaries, bootstrap_summaries_tasks
from dncsim.analysis.estimators.crossfit import crossfit_geometry, crossfit_geometry_tasks
from dncsim.analysis.estimators.debiased import DESIGNS, debiased_geometry, debiased_geometry_tasks
from dncsim.analysis.estimators.jackknife import jackknife_summaries, jackknife_summaries_tasks
from dncsim.analysis.estimators.pairs import (AUTO_WILD_PAIRS, PAIR_BOOTSTRAP_SCHEMES, balanced_pairs,
                                              bootstrap_median_abs_cos, bootstrap_median_abs_cos_tasks,
                                              resolve_pair_scheme)
from dncsim.analysis.estimators.plugin import plugin_geometry
from dncsim.analysis.estimators.result import FLAGS, GeometryEstimate
from dncsim.analysis.estimators.validate import DEFAULT_ESTIMATOR, ESTIMATORS, check_estimator

__all__ = ["GeometryEstimate", "FLAGS", "ESTIMATORS", "DEFAULT_ESTIMATOR", "DESIGNS", "estimate_geometry",
           "plugin_geometry", "plugin_estimate", "debiased_geometry", "debiased_geometry_tasks", "crossfit_geometry",
           "crossfit_geometry_tasks", "jackknife_summaries", "jackknife_summaries_tasks", "bootstrap_summaries",
           "bootstrap_summaries_tasks", "bootstrap_median_abs_cos", "bootstrap_median_abs_cos_tasks",
           "balanced_pairs", "resolve_pair_scheme", "PAIR_BOOTSTRAP_SCHEMES", "AUTO_WILD_PAIRS"]

#: the plug-in's former name
plugin_estimate = plugin_geometry


def estimate_geometry(features, labels, estimator: str = DEFAULT_ESTIMATOR, *, strata=None, design: str = "auto",
                      seed: int = 0, ddof: int = 0, splits: int = 2) -> GeometryEstimate:
    """The geometry of ``features`` (N, d) with ``labels`` (N,) by ``estimator``: 'debiased' (default;
    ``strata`` and ``design`` as :func:`debiased_geometry`), 'plugin' (``ddof``) or 'crossfit' (``splits``,
    ``seed``)."""
    check_estimator(estimator)
    if estimator == "plugin":
        return plugin_geometry(features, labels, ddof=ddof)
    if estimator == "crossfit":
        return crossfit_geometry(features, labels, splits=splits, seed=seed)
    return debiased_geometry(features, labels, strata=strata, design=design)
