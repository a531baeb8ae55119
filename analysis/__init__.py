"""dncsim.analysis: geometry of labelled features, few-shot bounds, orthogonality, metrics.

Pure functions on tensors: nothing here imports ``simulator`` or ``scenarios``.
"""
from dncsim.analysis.bounds import (THEOREM_MIN_SHOTS, BoundResult, class_subsets, ncc_error_bound,
                             ncc_error_bound_prior, ncc_error_bound_prior_legacy, orthogonality_bound)
from dncsim.common import DncsimError
from dncsim.analysis.fewshot import FewShotResult, ncc_fewshot_error, ncc_reference_protocol, reference_class_pairs
from dncsim.analysis.geometry import (ClassGeometry, ClassMeans, GeometryAccumulator, UndefinedGeometry,
                                      class_geometry, streaming_class_geometry)
from dncsim.analysis.orthogonality import axis_drift, cross_task_cosines, orthogonality_summary

__all__ = [
    "DncsimError", "UndefinedGeometry", "ClassGeometry", "ClassMeans", "GeometryAccumulator", "class_geometry",
    "streaming_class_geometry", "THEOREM_MIN_SHOTS", "BoundResult", "class_subsets", "ncc_error_bound",
    "ncc_error_bound_prior", "ncc_error_bound_prior_legacy", "orthogonality_bound", "FewShotResult",
    "ncc_fewshot_error", "ncc_reference_protocol", "reference_class_pairs", "cross_task_cosines",
    "orthogonality_summary", "axis_drift",
]
