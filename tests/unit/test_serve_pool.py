"""The standing pool's Serve config: valid for `serve deploy` (Ray Serve's config schema, unknown
fields refused), one app per teacher, no HTTP route."""

from pathlib import Path

import yaml

from orchestration.config import load_run_config
from orchestration.serve_pool import IMPORT_PATH, write_serve_config
from teachers.loaded import TeacherAppArgs
from tests.schemas import strict, validate

POOL = Path(__file__).parents[1] / "integration" / "configs" / "pool.yaml"


def test_the_pool_config_is_a_serve_deploy_config_of_the_teachers(tmp_path, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "pool.yaml"
    write_serve_config(load_run_config(POOL), path)
    config = yaml.safe_load(path.read_text())
    validate(config, strict(ServeDeploySchema.model_json_schema()))
    schema = ServeDeploySchema.model_validate(config)
    assert str(schema.proxy_location).endswith("Disabled")
    (app,) = config["applications"]
    assert app["name"] == "teacher-pool-mlp" and app["import_path"] == IMPORT_PATH and app["route_prefix"] is None
    args = TeacherAppArgs.model_validate(app["args"])
    assert Path(args.weights_path).is_file() and args.weights_path.startswith(str(tmp_path / "cache"))
    assert args.in_features == 64  # the teachers read the image view
