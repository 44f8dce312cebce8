"""`distillery teacher serve`: one teacher as a standalone gRPC TeacherService, no Ray cluster."""

from __future__ import annotations

import signal
import threading
from typing import Any, Optional

from rich.console import Console

from cluster import DEFAULT_ALLOWED_MODULES, load_yaml_model, work_device
from ingest import DataConfig
from orchestration.config import load_run_config
from students import DistillConfig
from teachers import TeacherConfig


def serve_teacher(teacher_yaml: str, *, port: int, host: str, run_config: Optional[str], console: Console,
                  security_files: dict[str, Any]) -> None:
    """Load (or train and cache) the teacher, serve it until SIGINT/SIGTERM."""
    from cluster import teacher_cache_dir
    from ingest import load_dataset
    from orchestration.teacher_training import teacher_app_args, train_or_load_teacher
    from teachers import LoadedTeacher, ServerSecurity, resolve_model, start_teacher_server

    teacher = load_yaml_model(TeacherConfig, teacher_yaml)
    if run_config:
        run = load_run_config(run_config)
        data, distill, allowed = run.data, run.distill, run.run.allowed_factory_modules
    else:
        data, distill, allowed = DataConfig(), DistillConfig(), list(DEFAULT_ALLOWED_MODULES)
    dataset = load_dataset(data)
    weights = teacher.weights
    if weights is None and not teacher.pretrained:
        model = resolve_model(teacher.model, in_features=dataset.in_features, num_classes=dataset.num_classes,
                              allowed_modules=allowed)
        console.print(f"teacher {teacher.name}: training or loading cached weights")
        weights = train_or_load_teacher(teacher.name, model, teacher.training, data, dataset,
                                        teacher_cache_dir(), teacher.resources.num_gpus).weights_path
    loaded = LoadedTeacher.load(teacher_app_args(teacher, weights, dataset, distill, allowed),
                                work_device(teacher.resources.num_gpus, f"teacher {teacher.name!r}"))
    security = ServerSecurity(**security_files)
    server, bound = start_teacher_server(loaded, host=host, port=port, security=security)
    scheme = "grpc" if security.insecure else "grpcs"
    url_host = f"[{host}]" if ":" in host else host
    console.print(f"teacher {teacher.name} (version {loaded.version}, {loaded.output_space}) serving on "
                  f"{scheme}://{url_host}:{bound}", highlight=False, soft_wrap=True)
    console.print(f"register it: distillery teacher add --run <run> --endpoint {scheme}://{url_host}:{bound}"
                  + (" --token-file <file>" if security.token else ""), highlight=False, soft_wrap=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    console.print(f"teacher {teacher.name} stopped")
