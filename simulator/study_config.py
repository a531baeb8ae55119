"""The study file's schema: the base run config, the grid of factors, the engine and where a dask study
runs (``cluster:``: local, SLURM or a scheduler's address), the statistics and the design."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from dncsim.analysis.study import StatisticsConfig
from dncsim.common import DncsimError, StrictModel, UserPath, one_line_error, read_yaml
from dncsim.simulator.config import MAX_THREADS
from dncsim.simulator.design import MAX_RUNS, DesignConfig

__all__ = ["StudyConfig", "LocalClusterConfig", "SlurmClusterConfig", "AddressClusterConfig", "AdaptConfig",
           "ClusterConfig", "load_study_config"]


# --- where a dask study runs (cluster:) ------------------------------------------------------------------

class LocalClusterConfig(StrictModel):
    """A dask LocalCluster on this machine: ``workers`` single-threaded worker processes (the default)."""

    kind: Literal["local"] = "local"


class AddressClusterConfig(StrictModel):
    """A running dask scheduler to connect to; its workers must see the data and the study directory."""

    kind: Literal["address"] = "address"
    address: str = Field(min_length=1, description="the scheduler's address, tcp://host:8786")


class AdaptConfig(StrictModel):
    """dask's adaptive scaling, in SLURM jobs."""

    minimum: int = Field(0, ge=0, description="fewest jobs kept")
    maximum: int = Field(ge=1, description="most jobs at once")

    @model_validator(mode="after")
    def _ordered(self):
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is more than maximum ({self.maximum})")
        return self


#: SLURMCluster keywords set from the keys above; ``options`` may not set them again
_SLURM_MANAGED = ("queue", "account", "cores", "job_cpu", "memory", "walltime", "processes", "job_extra_directives",
                  "job_script_prologue", "log_directory", "worker_extra_args")


class SlurmClusterConfig(StrictModel):
    """SLURM jobs started by ``dask_jobqueue.SLURMCluster`` (``pip install 'dncsim[dask]'``), each running
    ``runs_per_job`` single-threaded dask worker processes: one run at a time per process, with one GPU
    each when the job has GPUs (the workers offer the resource ``GPU=1``; a run asking for a GPU takes one)."""

    kind: Literal["slurm"] = "slurm"
    queue: Optional[str] = Field(None, description="partition (#SBATCH -p)")
    account: Optional[str] = Field(None, description="account to charge (#SBATCH -A)")
    cores: int = Field(4, ge=1, description="CPUs per job (--cpus-per-task), shared by its runs")
    memory: str = Field("16GiB", description="memory per job (--mem; 16GiB is --mem=16G), shared by its runs")
    walltime: str = Field("04:00:00", description="time limit per job (#SBATCH -t)")
    gpus: int = Field(0, ge=0, description="GPUs per job (--gres=gpu:N)")
    runs_per_job: Optional[int] = Field(None, ge=1, description="worker processes per job, one run each at a time "
                                                                "(default: gpus, or 1)")
    job_extra_directives: List[str] = Field(default_factory=list,
                                            description="more #SBATCH lines, e.g. --constraint=a100, --qos=long")
    prologue: List[str] = Field(default_factory=list,
                                description="shell lines the job runs before its workers start (module load ..., "
                                            "source .venv/bin/activate)")
    worker_args: List[str] = Field(default_factory=list,
                                   description="more arguments to every dask worker, e.g. [--lifetime, 3h50m, "
                                               "--lifetime-stagger, 5m] to leave before the walltime ends")
    log_directory: Optional[UserPath] = Field(None, description="the jobs' SLURM output (default: <study "
                                                                "dir>/dask-logs)")
    scale: Optional[int] = Field(None, ge=1, description="jobs to start (default: enough for `workers` runs at once)")
    adapt: Optional[AdaptConfig] = Field(None, description="{minimum, maximum} jobs: scale with the queue of runs "
                                                           "instead of a fixed number")
    options: Dict[str, Any] = Field(default_factory=dict,
                                    description="more SLURMCluster keyword arguments (interface, local_directory, "
                                                "scheduler_options, python, ...)")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v):
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?)\s*", v):
            raise ValueError(f"expected an amount such as 16GB or 64GiB; got {v!r}")
        return v.strip()

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v):
        if not re.fullmatch(r"(\d+-)?\d+(:\d{2}){0,2}", v.strip()):
            raise ValueError(f"expected SLURM's [D-]HH:MM:SS (or minutes); got {v!r}")
        return v.strip()

    @field_validator("options")
    @classmethod
    def _options(cls, v):
        taken = [k for k in v if k in _SLURM_MANAGED]
        if taken:
            raise ValueError(f"{taken[0]!r} is set from the cluster's own keys; leave it out of options")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.scale is not None and self.adapt is not None:
            raise ValueError("give scale (a fixed number of jobs) or adapt, not both")
        if self.gpus and self.runs_per_job is not None and self.runs_per_job > self.gpus:
            raise ValueError(f"runs_per_job {self.runs_per_job} would share the job's {self.gpus} GPUs; at most one "
                             "run per GPU (runs_per_job <= gpus)")
        return self

    @property
    def processes(self) -> int:
        """Worker processes per job (= runs at once per job)."""
        return self.runs_per_job or self.gpus or 1


ClusterConfig = Annotated[Union[LocalClusterConfig, SlurmClusterConfig, AddressClusterConfig],
                          Field(discriminator="kind")]


class StudyConfig(StrictModel):
    """A base run config, overrides for every run, a grid of factors, the engine and the statistics."""

    name: Optional[str] = Field(None, description="study name (default: the study file's name)")
    base: Union[UserPath, Dict[str, Any]] = Field(description="a run config file, or an inline run config mapping")
    set: Dict[str, Any] = Field(default_factory=dict, description="KEY.PATH: value overrides for every run")
    factors: Dict[str, List[Any]] = Field(description="KEY.PATH: [values]; the runs are their cartesian product")
    engine: Literal["local", "dask"] = Field("local",
        description="local: a process pool on this machine; dask: dask.distributed on cluster (the dask extra)")
    workers: int = Field(2, ge=1, le=10_000, description="runs at once")
    threads_per_worker: Optional[int] = Field(None, ge=1, le=MAX_THREADS,
                                              description="torch threads per run (default: cores / workers)")
    scheduler: Optional[str] = Field(None, description="dask: address of a running scheduler (default: a "
                                                       "LocalCluster); the same as cluster: {kind: address, ...}")
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig,
                                   description="dask: where the workers run: local (a LocalCluster), slurm (SLURM "
                                               "jobs through dask-jobqueue) or address (a running scheduler)")
    out: Optional[UserPath] = Field(None, description="study directory (default: studies/<name>)")
    retry_failed: bool = Field(False, description="run again the runs recorded as failed")
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig,
                                         description="the outcome the tests read and how they resample")
    design: DesignConfig = Field(default_factory=DesignConfig, description="seeds per run, task order and per-task "
                                 "treatments on Latin squares, placebo arms, replicates (simulator/design.py)")

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v):
        if not isinstance(v, (str, Path, dict)):
            raise ValueError(f"expected a run config file name or an inline run config mapping; got "
                             f"{type(v).__name__} {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        from dncsim.rundir import plain_name
        return v if v is None else plain_name(v, "--out or out:")

    @field_validator("factors")
    @classmethod
    def _factors(cls, v):
        if not v:
            raise ValueError("at least one factor is needed")
        empty = [k for k, vals in v.items() if not vals]
        if empty:
            raise ValueError(f"factor {empty[0]} has no values")
        runs = math.prod(len(vals) for vals in v.values())
        if runs > MAX_RUNS:
            raise ValueError(f"the grid has {runs} runs ({' x '.join(str(len(vals)) for vals in v.values())}); "
                             f"at most {MAX_RUNS}")
        return v

    @model_validator(mode="after")
    def _one_scheduler(self):
        if self.scheduler and self.cluster.kind == "slurm":
            raise ValueError("scheduler: a scheduler address and cluster.kind 'slurm' exclude each other (the SLURM "
                             "cluster starts its own scheduler)")
        if self.scheduler and self.cluster.kind == "address" and self.cluster.address != self.scheduler:
            raise ValueError(f"scheduler: {self.scheduler} differs from cluster.address {self.cluster.address}")
        return self

    @property
    def dask_cluster(self):
        """The cluster of engine dask, ``scheduler`` counting as ``{kind: address}``."""
        if self.scheduler and self.cluster.kind == "local":
            return AddressClusterConfig(address=self.scheduler)
        return self.cluster


def load_study_config(path, overrides: Dict[str, Any] = None) -> StudyConfig:
    """Read and validate a study file; CLI values in ``overrides`` (engine, workers, ...) take precedence."""
    data = read_yaml(path)
    data.setdefault("name", Path(path).stem)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise DncsimError(one_line_error(exc, StudyConfig)) from None


