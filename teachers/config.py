"""The teachers' sections of a run config: each teacher (`teachers:`) and Serve's proxies (`serve:`)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from cluster import DTYPES, ModelSpec, ResourcesConfig, Strict, check_name


class TeacherTrainingConfig(Strict):
    """How a teacher without a weights file is trained (the result is cached)."""

    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


class TeacherConfig(Strict):
    """One teacher: a model, where its weights come from, its weight in the mix, its resources."""

    name: str
    model: ModelSpec
    weights: Optional[str] = Field(None, description="safetensors file; omitted: train and cache")
    pretrained: bool = Field(False, description="the factory loads pretrained weights itself (teachers.hf): "
                                                "no training and no weights file")
    training: TeacherTrainingConfig = Field(default_factory=TeacherTrainingConfig)
    weight: float = Field(1.0, gt=0)
    dtype: Literal[DTYPES] = Field("float32", description="what the teacher answers in (its replicas, precompute, "
                                                         "`teacher serve`): bfloat16 or float16 halve its memory "
                                                         "and speed it up on GPUs; float16 needs a GPU")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)

    _name = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _one_weight_source(self) -> "TeacherConfig":
        if self.pretrained and self.weights:
            raise ValueError("weights: a pretrained teacher loads its own weights; drop weights or pretrained")
        return self


class ServeConfig(Strict):
    """Serve's proxies. `grpc_port` turns on the gRPC ingress (TeacherService) on the head node,
    which listens plaintext on every interface of that node: callers must send the bearer token
    in `grpc_token_file`; put TLS termination in front of it for traffic that leaves the cluster."""

    proxy: Literal["disabled", "head"] = "disabled"
    grpc_port: Optional[int] = Field(None, ge=1, le=65535, description="Serve gRPC ingress port; off if omitted")
    grpc_token_file: Optional[str] = Field(None, description="file holding the ingress bearer token")

    @model_validator(mode="after")
    def _ingress_needs_token(self) -> "ServeConfig":
        if self.grpc_port is not None and not self.grpc_token_file:
            raise ValueError("grpc_token_file is required when grpc_port is set: Serve's gRPC ingress "
                             "accepts only calls that carry its bearer token")
        return self


def check_teachers(cfg: Any) -> None:
    """Teacher names are unique in a run."""
    names = [t.name for t in cfg.teachers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"teachers: names must be unique, repeated: {duplicates}")
