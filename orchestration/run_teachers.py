"""The run's teachers on the driver: deploy them through the orchestrator (or register their
offline stores), score them on the test split, and describe them for the results table."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from rich.console import Console

from orchestration.config import RunConfig, run_folder
from orchestration.teacher_record import TEACHERS_FILE
from orchestration.results import METRICS


def teacher_test_outputs(name: str, x: np.ndarray) -> Any:
    """A served teacher's record for the test split at temperature 1, through its own Serve app."""
    from ray import serve

    from teachers import app_name

    request = {"batches": [{"batch_id": "eval", "inputs": x}], "temperature": 1.0}
    return serve.get_app_handle(app_name(name)).remote(request).result(timeout_s=300)[0]


def teacher_scores(dataset, weights: dict[str, float]) -> tuple[dict[str, float], Optional[np.ndarray]]:
    """Each teacher's headline test metric, and for encoders the reference the students are
    scored against: the teachers' test embeddings averaged with the teachers' `weights`."""
    from students import accuracy, embedding_agreement

    names = list(weights)
    if dataset.kind == "lm":
        return {name: teacher_perplexity(name, dataset.test.x) for name in names}, None
    records = {name: teacher_test_outputs(name, dataset.teacher_view().test.x) for name in names}
    if dataset.kind != "embedding":
        scores = {name: accuracy(r.logprob, dataset.test.y) if r.is_dense
                  else float((r.topk_idx[:, 0] == dataset.test.y).mean()) for name, r in records.items()}
        if len(records) > 1 and all(r.is_dense for r in records.values()):
            probs = sum(weights[n] * np.exp(r.logprob) for n, r in records.items())
            scores[ENSEMBLE] = accuracy(probs, dataset.test.y)
        return scores, None
    reference = sum(weights[n] * r.logits for n, r in records.items()) / sum(weights[n] for n in records)
    return {n: embedding_agreement(r.logits, reference)["test_cosine"] for n, r in records.items()}, reference


def teacher_perplexity(name: str, x: np.ndarray, sequences: int = 64) -> float:
    """A served language-model teacher's held-out perplexity, through its own Serve app: calls
    of `sequences` sequences, all in flight at once (the replicas share them)."""
    from ray import serve

    from teachers import app_name

    handle = serve.get_app_handle(app_name(name))
    calls = [handle.perplexity.remote(x[start:start + sequences]) for start in range(0, len(x), sequences)]
    parts = [call.result(timeout_s=600) for call in calls]
    nll, tokens = sum(p["nll"] for p in parts), sum(p["tokens"] for p in parts)
    return float(np.exp(nll / max(tokens, 1)))


ENSEMBLE = "ensemble of the teachers"  # not a valid teacher name, so it never clashes with one


def deploy_teachers(cfg: RunConfig, orchestrator, dataset,
                     console: Console) -> tuple[dict[str, dict[str, Any]], Optional[np.ndarray]]:
    """Deploy the config's teachers, or for a resumed run the teacher set its last driver had
    (`orchestration.teacher_record`); return the result rows of the teachers deployed from
    configs and, for encoders, the reference embeddings."""
    import ray

    if cfg.teachers:
        console.print(f"teachers: training or loading {', '.join(t.name for t in cfg.teachers)}")
    teacher_set = ray.get(orchestrator.restore_teachers.remote([t.model_dump() for t in cfg.teachers]))
    if teacher_set["restored"]:
        console.print(f"teachers: restored the set the run had ({', '.join(teacher_set['restored'])}) from "
                      f"{run_folder(cfg).child(TEACHERS_FILE)}", highlight=False)
    for skipped in teacher_set["skipped"]:
        console.print(f"teacher {skipped}: not restored", style="yellow", highlight=False)
    infos = teacher_set["deployed"]
    if not infos:
        return {}, None
    scores, reference = teacher_scores(dataset, {info["name"]: info["weight"] for info in infos})
    title = METRICS["test_cosine" if reference is not None else "test_perplexity" if dataset.kind == "lm"
                    else "test_accuracy"][0]
    teachers = {}
    for info in infos:
        name = info["name"]
        teachers[name] = {"score": scores[name], "parameters": info["parameters"],
                          "train_seconds": info["train_seconds"], "cached": info["cached"],
                          "pretrained": info["pretrained"], "model_version": info["model_version"]}
        source = "pretrained" if info["pretrained"] else "cached" if info["cached"] else "trained"
        console.print(f"teacher {name}: deployed as teacher-{name}, version {info['model_version']}, "
                      f"{title} {scores[name]:.4f} ({source})")
    if ENSEMBLE in scores:
        teachers[ENSEMBLE] = {"score": scores[ENSEMBLE], "parameters": sum(t["parameters"] for t in teachers.values()),
                              "train_seconds": sum(t["train_seconds"] for t in teachers.values()),
                              "note": "weighted mean of the teachers' probabilities", "ensemble": True}
        console.print(f"{ENSEMBLE}: {title} {scores[ENSEMBLE]:.4f}")
    return teachers, reference


def use_stores(cfg: RunConfig, orchestrator, stores: dict, console: Console) -> dict[str, dict[str, Any]]:
    """Offline mode: register each teacher's store as its entry in the teacher set."""
    import ray

    from teachers import TeacherEntry

    weights = {t.name: t.weight for t in cfg.teachers}
    entries = [TeacherEntry(name, weights[name], m.output_space, m.num_classes, m.key.teacher_version)
               for name, (_, m) in stores.items()]
    ray.get(orchestrator.use_stored_teachers.remote(entries))
    teachers = {}
    for name, (folder, manifest) in stores.items():
        console.print(f"teacher {name}: offline store {folder} ({manifest.rows} rows, top-{manifest.key.top_k}, "
                      f"T={manifest.key.temperature:g}, version {manifest.key.teacher_version})", highlight=False)
        teachers[name] = {"score": manifest.teacher_test_score, "parameters": 0,
                          "train_seconds": 0.0, "cached": True}
    return teachers
