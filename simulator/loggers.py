"""The run's loggers (``output.loggers``): Avalanche's, streaming every metric as the run goes.

* ``tensorboard``: ``TensorboardLogger`` into ``<run dir>/tb/``;
* ``wandb``: ``WandBLogger`` (``dncsim[wandb]``), files in ``<run dir>/wandb/``, offline unless
  ``WANDB_MODE`` is set; project ``output.wandb_project``; the run id is kept in the manifest
  (``wandb_run_id``) so a resume continues the same wandb run.

Both get ``dncsim/<metric>...`` scalars with step = row r. The run directory's files do not depend on them.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
import warnings
from pathlib import Path
from typing import List, Optional

from dncsim.common import DncsimError, RunFailed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.logging import TensorboardLogger

__all__ = ["LOGGERS", "WANDB_EXTRA", "check_loggers", "attach_loggers", "close_loggers", "new_wandb_id"]

LOGGERS = ("tensorboard", "wandb")
WANDB_EXTRA = "pip install 'dncsim[wandb]'"


def check_loggers(cfg) -> None:
    """One line naming the extra to install when a logger's package is missing (called before the run
    directory is touched)."""
    if "wandb" in cfg.output.active_loggers and importlib.util.find_spec("wandb") is None:
        raise DncsimError(f"output.loggers: 'wandb' needs the wandb package: {WANDB_EXTRA}")


def new_wandb_id() -> str:
    return "dncsim-" + secrets.token_hex(6)


def _wandb_logger_class():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.logging import WandBLogger

    class ScalarWandBLogger(WandBLogger):
        """Avalanche 0.6's WandBLogger, logging scalars itself: its own ``log_single_metric`` reads
        ``wandb.viz``, which current wandb lacks (AttributeError on the first metric). dncsim's metrics
        are all scalars; values of other types (images, tensors) are not logged."""

        def log_single_metric(self, name, value, x_plot):
            self.step = x_plot
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.wandb.log({name: float(value)}, step=self.step)

    return ScalarWandBLogger


def _wandb_logger(parts, run_id: str):
    import wandb
    cfg = parts.config
    mode = os.environ.get("WANDB_MODE") or "offline"
    settings = wandb.Settings(console="off", silent=True)
    try:
        return _wandb_logger_class()(project_name=cfg.output.wandb_project or "dncsim", run_name=cfg.name,
                                     config=cfg.model_dump(mode="json"), dir=str(parts.directory.path), save_code=False,
                                     params={"id": run_id, "resume": "allow", "mode": mode, "settings": settings})
    except Exception as exc:        # noqa: BLE001 - wandb's own errors (login, network) end the run in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RunFailed(f"output.loggers: wandb could not start in mode {mode!r} ({type(exc).__name__}: "
                        f"{first[:200]})", {"stage": "loggers"}) from None


def attach_loggers(parts, wandb_id: Optional[str] = None) -> List:
    """Add the loggers of ``output.loggers`` to the run's evaluator (the run directory exists); returns them.
    wandb records the resolved run config (``parts.config``)."""
    names = parts.config.output.active_loggers
    added = []
    if "tensorboard" in names:
        added.append(TensorboardLogger(tb_log_dir=str(parts.directory.file("tb"))))
    if "wandb" in names:
        added.append(_wandb_logger(parts, wandb_id or new_wandb_id()))
    evaluator = parts.strategy.evaluator
    evaluator.loggers = list(evaluator.loggers) + added
    return added


def close_loggers(loggers: List, *, failed: bool, stream=None) -> None:
    """Finish a wandb run (exit code 1 when the run failed or was interrupted) and say on ``stream``
    where an offline run's files are."""
    for logger in loggers:
        run = getattr(getattr(logger, "wandb", None), "run", None)
        if run is None:
            continue
        where = Path(run.dir).parent if getattr(run, "dir", None) else None
        offline = getattr(run.settings, "mode", None) == "offline" or bool(getattr(run.settings, "_offline", False))
        try:
            run.finish(exit_code=1 if failed else 0)
            # the offline transaction log is written by wandb's service process, which may still be
            # writing when finish returns: tear the service down, so the files are complete (and a
            # `wandb sync` right after uploads everything) when the run reports it has ended
            import wandb
            wandb.teardown()
        except Exception:       # noqa: BLE001 - a logger must not hide how the run ended
            pass
        if offline and where is not None and stream is not None:
            print(f"wandb: offline run in {where}; upload it with: wandb sync {where}", file=stream, flush=True)
