"""The KubeRay manifests: token authentication on, GPU worker groups, an entrypoint that is a
valid `distillery run` of a shipped config, a Serve config whose teachers build; the RayJob and
RayService valid against KubeRay v1.7.0's own CRD schema (`deploy/kuberay/crds/`), their Serve
config against Ray Serve's config schema, and every Kubernetes object in them (pod templates,
the volume claim) against Kubernetes' OpenAPI schema, all strictly (unknown fields refused).
Not checked offline: the CRDs' CEL rules (`x-kubernetes-validations`), which only the API
server evaluates."""

import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from orchestration.config import load_run_config
from teachers.backend import resolve_model
from teachers.loaded import TeacherAppArgs
from tests.schemas import crd_schema, strict, validate

REPO = Path(__file__).parents[2]
KUBERAY = REPO / "deploy" / "kuberay"


def _manifests() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(KUBERAY.glob("*.yaml"))}


def _ray_manifests() -> dict[str, dict]:
    return {name: m for name, m in _manifests().items() if m["apiVersion"] == "ray.io/v1"}


def _cluster_specs(manifest: dict) -> dict:
    return manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_every_manifest_turns_token_auth_on_and_gives_workers_gpus():
    assert set(_ray_manifests()) == {"rayjob.yaml", "rayservice.yaml"}
    for path, manifest in _ray_manifests().items():
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
    ServeDeploySchema.model_validate(serve_config)
    assert serve_config["proxy_location"] == "Disabled"
    quickstart = load_run_config(REPO / "deploy" / "configs" / "quickstart.yaml")
    for app in serve_config["applications"]:
        assert app["import_path"] == "teachers.deployment:build_teacher_app" and app["route_prefix"] is None
        args = TeacherAppArgs.model_validate(app["args"])
        teacher = next(t for t in quickstart.teachers if t.name == args.name)
        model = resolve_model(teacher.model, in_features=args.in_features, num_classes=10)
        assert (args.factory, args.kwargs) == (model.factory, model.kwargs) and app["name"] == f"teacher-{args.name}"
        model.build()  # the factory and kwargs build the teacher's module


@pytest.mark.parametrize("path", ["rayjob.yaml", "rayservice.yaml"])
def test_the_ray_manifests_pass_kuberays_own_crd_schema_strictly(path):
    manifest = _manifests()[path]
    validate(manifest, crd_schema(manifest["kind"]))
    if manifest["kind"] == "RayService":
        from ray.serve.schema import ServeDeploySchema

        validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]), strict(ServeDeploySchema.model_json_schema()))


@pytest.mark.parametrize("where, change, message", [
    (["spec"], lambda spec: spec.update(entrypont=spec.pop("entrypoint")), "'entrypont' was unexpected"),
    (["spec", "rayClusterSpec", "headGroupSpec", "rayStartParams"], lambda params: params.update({"num-cpus": 0}),
     "0 is not of type 'string'"),
    (["spec", "rayClusterSpec", "workerGroupSpecs", 0], lambda group: group.update(replica=1),
     "'replica' was unexpected"),
    (["spec", "rayClusterSpec", "headGroupSpec", "template", "spec", "containers", 0],
     lambda container: container.update(imagePullPolicy=["Always"]), "is not of type 'string'"),
])
def test_the_crd_schema_refuses_a_misspelt_or_mistyped_field(where, change, message):
    import jsonschema

    manifest = _manifests()["rayjob.yaml"]
    node = manifest
    for key in where:
        node = node[key]
    change(node)
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate(manifest, crd_schema("RayJob"))


def _groups(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def test_every_pod_template_and_the_volume_claim_pass_the_kubernetes_schema_strictly():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    checked = []
    for path, manifest in _manifests().items():
        if manifest["apiVersion"] != "ray.io/v1":
            kubernetes_validate.validate(manifest, version, strict=True)
            checked.append(f"{path}:{manifest['kind']}")
            continue
        for i, group in enumerate(_groups(_cluster_specs(manifest))):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                            "metadata": {"name": f"group-{i}"}, "template": group["template"]}
            try:
                kubernetes_validate.validate(pod_template, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{path} group {i}: {e.message} at {list(e.absolute_path)}") from e
            checked.append(f"{path}:group-{i}")
    assert "volume.yaml:PersistentVolumeClaim" in checked and len(checked) == 5


def test_the_schema_check_refuses_a_misspelt_container_field():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    template = _cluster_specs(_manifests()["rayjob.yaml"])["headGroupSpec"]["template"]
    template["spec"]["containers"][0]["resource"] = template["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                                      "template": template}, latest_version(), strict=True)


def test_the_ray_fields_have_the_types_kuberay_requires():
    dns_label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    claim = _manifests()["volume.yaml"]
    for path, manifest in _ray_manifests().items():
        assert dns_label.match(manifest["metadata"]["name"]), path
        spec = _cluster_specs(manifest)
        assert isinstance(spec["rayVersion"], str), path
        for group in _groups(spec):
            # rayStartParams is a map of strings in KubeRay's API: a bare YAML number is refused
            assert all(isinstance(v, str) for v in group["rayStartParams"].values()), path
            claims = {v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]}
            assert claims == {claim["metadata"]["name"]}, path
        for group in spec["workerGroupSpecs"]:
            assert dns_label.match(group["groupName"]), path
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], path
    assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_the_image_copies_every_package_the_project_installs():
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    copied = {line.split()[-1] for line in dockerfile.splitlines() if line.startswith("COPY")}
    assert {p.split(".")[0] for p in packages} <= copied
    for source in {s for line in dockerfile.splitlines() if line.startswith("COPY") for s in line.split()[2:-1]}:
        assert (REPO / source).exists(), source
