"""Where and how a run computes (precision itself: ``DncsimStrategy.autocast``).

* ``deterministic_environment`` / ``configure_device`` (``training.deterministic``): on CUDA,
  deterministic algorithms and cuDNN autotuner off, or the autotuner on; TF32 off either way.
* ``on_device``: source tensors moved to the device once.
* ``compile_backbone`` / ``guard_compiled`` (``training.compile``): in place, one-line errors.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from dncsim.common import DncsimError, RunFailed
from dncsim.simulator.config import FP16_ON_CPU

__all__ = ["check_precision", "deterministic_environment", "configure_device", "on_device", "compile_backbone",
           "guard_compiled", "DEVICE_DATA_FRACTION", "CUBLAS_DETERMINISTIC"]

#: a source tensor is copied to a CUDA device once only when it takes at most this share of the device's free
#: memory; a larger one stays on the host and each mini-batch is copied, as Avalanche's loader would
DEVICE_DATA_FRACTION = 0.5
#: CUBLAS_WORKSPACE_CONFIG values under which cuBLAS is deterministic (CUDA >= 10.2)
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs a CUDA device (``device: auto`` resolves only here, so the config cannot check it alone)."""
    if precision == "fp16" and device.type != "cuda":
        raise DncsimError(FP16_ON_CPU + f" (device resolved to '{device}')")


def deterministic_environment(deterministic: bool, device_name: str = "auto") -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already one of the deterministic values) for a run that
    may use CUDA with ``deterministic``: cuBLAS reads it when it first starts, so it must come before any CUDA
    work of the process (the run calls this before it touches CUDA; a study worker before it claims a GPU)."""
    if deterministic and device_name != "cpu" and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_DETERMINISTIC:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC[0]


def configure_device(device: torch.device, deterministic: bool) -> None:
    """The process-wide CUDA settings of a run on ``device`` (nothing on the CPU, which is deterministic):
    deterministic algorithms (ops without a deterministic CUDA kernel warn, naming themselves) and cuDNN's
    autotuner off when ``deterministic``, else the autotuner on; TF32 off in either case, so that fp32 is
    IEEE fp32 -- in training as in the evaluation's feature extraction (lower precision is what
    ``training.precision`` asks for, in training steps only)."""
    if device.type != "cuda":
        return
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def on_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` copied to ``device`` once (the same tensor when it is there already). On a CUDA device a tensor
    larger than ``DEVICE_DATA_FRACTION`` of the free memory stays on the host: its mini-batches are then
    copied one by one (the values are the same either way)."""
    if t.device == device:
        return t
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if t.numel() * t.element_size() > DEVICE_DATA_FRACTION * free:
            return t
    return t.to(device)


def compile_backbone(backbone: torch.nn.Module, device: torch.device) -> None:
    """``training.compile``: compile the backbone's network in place (``nn.Module.compile`` on ``backbone.body``:
    the module, its parameter names and the checkpoint stay as they are, and forward hooks on the backbone
    itself still see the real input and output). What torch.compile needs is checked here, so that a machine
    without it gets one line before anything runs; a compilation that fails later stops the run in one line
    too (:func:`guard_compiled`)."""
    try:
        if device.type == "cuda":
            from torch.utils._triton import has_triton
            if not has_triton():
                raise RuntimeError("the triton package is missing (pip install triton)")
        else:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
    except Exception as exc:      # noqa: BLE001 - whatever is missing, the answer is the same
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DncsimError(f"training.compile: torch.compile cannot work on this machine ({reason}); "
                          "set training.compile: false") from None
    body = getattr(backbone, "body", backbone)
    body.compile()
    guard_compiled(body)


def guard_compiled(module: nn.Module) -> None:
    """Make a compilation failure of ``module`` (compiled in place by ``module.compile()``) one line: a
    :class:`~dncsim.common.RunFailed` naming ``training.compile`` instead of torch's page of traceback."""
    compiled = module._compiled_call_impl
    if compiled is None:
        return

    def call(*args, **kwargs):
        from torch._dynamo.exc import TorchDynamoException
        try:
            return compiled(*args, **kwargs)
        except TorchDynamoException as exc:
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise RunFailed(f"training.compile: torch.compile failed ({type(exc).__name__}: {first[:300]}); set "
                            "training.compile: false", {"stage": "compile", "error": type(exc).__name__}) from None
    module._compiled_call_impl = call
