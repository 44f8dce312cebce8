"""A standing pool of teachers: a Serve config (`serve deploy`) written from a run config.

`distillery serve-config CONFIG -o pool.yaml` trains (or loads from the cache) every teacher of
CONFIG and writes one Serve application per teacher, `teacher-<name>`, built by
`teachers.deployment:build_teacher_app` from plain arguments (weights path, model factory,
resources). `serve deploy pool.yaml` starts them and keeps them running across jobs; a job
uses one with `distillery teacher add --run <run> --serve-app teacher-<name>` (and leaves it
running when it removes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cluster import is_uri, teacher_cache_dir
from orchestration.config import RunConfig

IMPORT_PATH = "teachers.deployment:build_teacher_app"


def serve_config(cfg: RunConfig) -> dict[str, Any]:
    """The Serve config (ServeDeploySchema) of `cfg`'s teachers; trains uncached teachers here."""
    from ingest import load_dataset
    from orchestration.teacher_training import teacher_app_args, train_or_load_teacher
    from teachers import app_name, resolve_model

    dataset = load_dataset(cfg.data).teacher_view()
    applications = []
    for teacher in cfg.teachers:
        weights = teacher.weights
        if weights is None and not teacher.pretrained:
            model = resolve_model(teacher.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                                  allowed_modules=cfg.run.allowed_factory_modules)
            weights = train_or_load_teacher(teacher.name, model, teacher.training, cfg.data, dataset,
                                            teacher_cache_dir()).weights_path
        located = weights if weights is None or is_uri(weights) else str(Path(weights).resolve())
        args = teacher_app_args(teacher, located, dataset, cfg.distill,
                                cfg.run.allowed_factory_modules)
        applications.append({"name": app_name(teacher.name), "import_path": IMPORT_PATH, "route_prefix": None,
                             "args": args.model_dump(mode="json")})
    return {"proxy_location": "Disabled", "applications": applications}


def write_serve_config(cfg: RunConfig, path: Path) -> dict[str, Any]:
    config = serve_config(cfg)
    path.write_text("# A standing pool of teachers for `serve deploy` (written by `distillery serve-config`).\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return config
