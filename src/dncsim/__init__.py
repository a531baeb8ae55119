"""dncsim: directional neural collapse in continual multitask learning.

Public API, imported on first use so ``import dncsim`` stays fast::

    import dncsim
    g = dncsim.class_geometry(features, labels)       # the plug-in geometry: features (N, d), labels (N,)
    e = dncsim.estimate_geometry(features, labels)    # the default (debiased) estimate, as runs report it
    dncsim.ncc_error_bound(g, [10, 20])
    run_dir = dncsim.run(dncsim.load_run_config("configs/quickstart.yaml"), "runs/quickstart")
    dncsim.build_report(run_dir)

Subpackages: ``analysis``, ``scenarios``, ``simulator``; ``common`` and ``rundir`` are shared by all three.
"""
from __future__ import annotations

from dncsim.common import lazy_import

__all__ = [
    "DncsimError", "ClassGeometry", "class_geometry", "streaming_class_geometry", "estimate_geometry",
    "GeometryEstimate", "jackknife_summaries", "ncc_error_bound",
    "ncc_error_bound_prior", "orthogonality_bound", "ncc_fewshot_error", "cross_task_cosines",
    "orthogonality_summary", "axis_drift", "random_abs_cos", "analyze_labelings", "build_scenario",
    "load_scenario_config", "RunConfig", "load_run_config", "run", "load_run", "RunData", "build_report",
    "load_study_config", "run_study", "__version__",
]

_WHERE = {
    "DncsimError": "dncsim.common",
    "ClassGeometry": "dncsim.analysis.geometry",
    "class_geometry": "dncsim.analysis.geometry",
    "streaming_class_geometry": "dncsim.analysis.geometry",
    "estimate_geometry": "dncsim.analysis.estimators",
    "GeometryEstimate": "dncsim.analysis.estimators",
    "jackknife_summaries": "dncsim.analysis.estimators",
    "ncc_error_bound": "dncsim.analysis.bounds",
    "ncc_error_bound_prior": "dncsim.analysis.bounds",
    "orthogonality_bound": "dncsim.analysis.bounds",
    "ncc_fewshot_error": "dncsim.analysis.fewshot",
    "cross_task_cosines": "dncsim.analysis.orthogonality",
    "orthogonality_summary": "dncsim.analysis.orthogonality",
    "axis_drift": "dncsim.analysis.orthogonality",
    "random_abs_cos": "dncsim.analysis.orthogonality",
    "analyze_labelings": "dncsim.analysis.analyze",
    "build_scenario": "dncsim.scenarios",
    "load_scenario_config": "dncsim.scenarios",
    "RunConfig": "dncsim.simulator.config",
    "load_run_config": "dncsim.simulator.config",
    "run": "dncsim.simulator.run",
    "load_run": "dncsim.rundir",
    "RunData": "dncsim.rundir",
    "build_report": "dncsim.analysis.report",
    "load_study_config": "dncsim.simulator.study",
    "run_study": "dncsim.simulator.study",
}


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("dncsim")
        except PackageNotFoundError:
            return "unknown"
    return lazy_import(globals(), _WHERE, name)


def __dir__():
    return sorted(list(globals()) + __all__)
