"""dncsim.analysis: geometry of labelled features, few-shot bounds, orthogonality, metrics.

Pure functions on tensors: nothing here imports ``simulator`` or ``scenarios``. Each name below is
imported on first use, so importing a torch-free module of the package (``metrics.settings``, the
config sections) loads no torch.
"""
from dncsim.common import lazy_import

__all__ = [
    "DncsimError", "UndefinedGeometry", "ClassGeometry", "ClassMeans", "GeometryAccumulator", "class_geometry",
    "streaming_class_geometry", "THEOREM_MIN_SHOTS", "BoundResult", "class_subsets", "ncc_error_bound",
    "ncc_error_bound_prior", "ncc_error_bound_prior_legacy", "orthogonality_bound", "FewShotResult",
    "ncc_fewshot_error", "ncc_reference_protocol", "reference_class_pairs", "cross_task_cosines",
    "orthogonality_summary", "axis_drift",
]

_WHERE = {
    "DncsimError": "dncsim.common",
    **dict.fromkeys(("UndefinedGeometry", "ClassGeometry", "ClassMeans", "GeometryAccumulator", "class_geometry",
                     "streaming_class_geometry"), "dncsim.analysis.geometry"),
    **dict.fromkeys(("THEOREM_MIN_SHOTS", "BoundResult", "class_subsets", "ncc_error_bound", "ncc_error_bound_prior",
                     "ncc_error_bound_prior_legacy", "orthogonality_bound"), "dncsim.analysis.bounds"),
    **dict.fromkeys(("FewShotResult", "ncc_fewshot_error", "ncc_reference_protocol", "reference_class_pairs"),
                    "dncsim.analysis.fewshot"),
    **dict.fromkeys(("cross_task_cosines", "orthogonality_summary", "axis_drift"), "dncsim.analysis.orthogonality"),
}


def __getattr__(name: str):
    return lazy_import(globals(), _WHERE, name)


def __dir__():
    return sorted(list(globals()) + __all__)
