"""The KubeRay manifests: token authentication on, GPU worker groups, an entrypoint that is a
valid `distillery run` of a shipped config, and a Serve config whose teachers build."""

import shlex
from pathlib import Path

import ray
import yaml

from cluster.config import load_run_config
from teachers.backend import resolve_model
from teachers.deployment import TeacherAppArgs

REPO = Path(__file__).parents[2]
KUBERAY = REPO / "deploy" / "kuberay"


def _cluster_specs(manifest: dict) -> dict:
    return manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_every_manifest_turns_token_auth_on_and_gives_workers_gpus():
    for path in KUBERAY.glob("*.yaml"):
        manifest = yaml.safe_load(path.read_text())
        assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] in ("RayJob", "RayService"), path
        spec = _cluster_specs(manifest)
        assert spec["rayVersion"] == ray.__version__ and spec["authOptions"] == {"mode": "token"}, path
        for group in spec["workerGroupSpecs"]:
            for container in _containers(group):
                limits = container["resources"]["limits"]
                assert limits["nvidia.com/gpu"] == container["resources"]["requests"]["nvidia.com/gpu"] == "1"
        mounts = {m["mountPath"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
                  for c in _containers(g) for m in c["volumeMounts"]}
        assert mounts == {"/shared"}, path


def test_the_rayjob_entrypoint_is_a_run_of_a_shipped_config_on_gpus():
    manifest = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    argv = shlex.split(manifest["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "orchestration", "run"]
    sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    cfg = load_run_config(REPO / argv[4], {k: yaml.safe_load(v) for k, v in sets.items()})
    assert cfg.student.gpus_per_worker == 1
    workers = sum(g["replicas"] for g in _cluster_specs(manifest)["workerGroupSpecs"])
    assert workers >= cfg.student.num_workers
    assert argv[argv.index("--output-dir") + 1].startswith("/shared/")


def test_the_rayservice_serves_the_quickstart_teacher_with_no_http_route():
    from ray.serve.schema import ServeDeploySchema

    manifest = yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(serve_config)
    assert serve_config["proxy_location"] == "Disabled"
    quickstart = load_run_config(REPO / "deploy" / "configs" / "quickstart.yaml")
    for app in serve_config["applications"]:
        assert app["import_path"] == "teachers.deployment:build_teacher_app" and app["route_prefix"] is None
        args = TeacherAppArgs.model_validate(app["args"])
        teacher = next(t for t in quickstart.teachers if t.name == args.name)
        model = resolve_model(teacher.model, in_features=args.in_features, num_classes=10)
        assert (args.factory, args.kwargs) == (model.factory, model.kwargs) and app["name"] == f"teacher-{args.name}"
        model.build()  # the factory and kwargs build the teacher's module
