"""The run config: one YAML file composed of the sections each component owns.

| section | model | owner |
|---|---|---|
| `run` | `RunSection` | this module |
| `data`, `student`, `distill` | `DataConfig`, `StudentConfig`, `DistillConfig` | `students.config` |
| `teachers`, `serve` | `TeacherConfig`, `ServeConfig` | `teachers.config` |
| `continual` | `ContinualConfig` | `orchestration.regimes.continual` |
| `online` | `OnlineConfig` | `orchestration.regimes.co_training` |
| `generate` | `GenerateConfig` | `orchestration.regimes.sequence_level` |

The rules between sections live with the component they belong to and are listed in `RULES`,
run in that order once every section is valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import Field, field_validator, model_validator

from cluster import DEFAULT_ALLOWED_MODULES, RunFolder, Strict, check_name, default_cache_dir, load_with_overrides
from ingest import DataConfig
from orchestration.regimes.adversarial import check_generator
from orchestration.regimes.born_again import check_born_again
from orchestration.regimes.co_training import OnlineConfig, check_online
from orchestration.regimes.continual import ContinualConfig, check_continual
from orchestration.regimes.quantized import check_quantized
from orchestration.regimes.sequence_level import GenerateConfig, check_sequence_level
from orchestration.regimes.speculative import check_speculative
from students import DistillConfig, StudentConfig, check_distill, check_language_model, check_stream, check_weighting
from teachers import ServeConfig, TeacherConfig, check_teachers


class RunSection(Strict):
    name: str
    output_dir: str = "runs"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    baseline: bool = True
    allowed_factory_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_MODULES))
    mlflow_tracking_uri: Optional[str] = Field(
        None, description="also log metrics to this MLflow tracking server or store (e.g. http://mlflow:5000, "
                          "file:///shared/mlruns); needs `pip install mlflow-skinny`")
    mlflow_experiment: str = Field("distillery", description="the MLflow experiment the run's phases log to")

    _name = field_validator("name")(check_name)


RULES: list[Callable[[Any], None]] = [check_teachers, check_distill, check_born_again, check_weighting,
                                     check_continual, check_online, check_generator, check_sequence_level,
                                     check_language_model, check_speculative, check_quantized, check_stream]


class RunConfig(Strict):
    """The whole experiment: one YAML file."""

    run: RunSection
    data: DataConfig = Field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    continual: Optional[ContinualConfig] = Field(None, description="learn a sequence of tasks (lifelong)")
    online: Optional[OnlineConfig] = Field(None, description="co-train peer students that teach each other")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    @model_validator(mode="after")
    def _rules(self) -> "RunConfig":
        for rule in RULES:
            rule(self)
        return self


def run_folder(cfg: RunConfig) -> RunFolder:
    """Where the run keeps its files: `<run.output_dir>/<run.name>`, a local folder or a URI."""
    return RunFolder(cfg.run.output_dir, cfg.run.name, default_cache_dir())


def load_run_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> RunConfig:
    """Load and validate a run config. `overrides` maps dotted paths to values (CLI flags)."""
    return load_with_overrides(RunConfig, path, overrides)
