"""Student throughput with served teachers vs teachers in the worker vs stored soft targets.

    python -m benchmarks.pipeline [--repeats 5] [--config benchmarks/configs/pipeline.yaml]

Trains the same student on the same batches several ways in one Ray Train worker group,
interleaved and repeated, and reports the median samples/s (tokens/s for language models) of
each and its ratio to the precomputed upper bound (targets computed before training and held
in the worker's memory): the median of the per-repeat ratios, with their min and max.
"offline store" reads the Parquet store that `distillery precompute` writes (written once
before the repeats; its time is reported apart). Results go to `benchmarks/results/<name>.{md,json}`
(`--name`, default pipeline); `benchmarks.llm` runs it on a language model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from cluster.ray_env import prepare_ray_env

# Phase label -> (soft-target source, batches per teacher request; None: the config's).
SOURCES = {"served": ("served", None), "served, 1 batch per request": ("served", 1),
           "in the worker": ("local", None), "offline store": ("offline", None), "precomputed": ("precomputed", None)}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None, *, config: str = "benchmarks/configs/pipeline.yaml",
         name: str = "pipeline", title: str = "Pipeline benchmark: where the soft targets come from") -> None:
    prepare_ray_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=config)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default=name, help="results file name under benchmarks/results/")
    args = parser.parse_args(argv)

    import ray

    from rich.console import Console

    from benchmarks.machine import describe_machine
    from cluster.connection import connect
    from ingest.loading import load_dataset
    from orchestration.config import load_run_config
    from orchestration.precompute import precompute
    from orchestration.ray_run_control import RayRunControl
    from orchestration.services import start_orchestrator, start_serve
    from orchestration.training import train_students
    from students.job import StudentJob
    from students.losses import distill_terms
    from teachers.backend import resolve_model

    with tempfile.TemporaryDirectory(prefix="distillery-bench-") as out:
        cfg = load_run_config(args.config, {"run.output_dir": out, "distill.store_dir": f"{out}/store"})
        run_dir = Path(out) / cfg.run.name
        print(f"connected to {connect()}")
        dataset = load_dataset(cfg.data)
        started = time.perf_counter()
        manifests = precompute(cfg, dataset, Console())
        stores = {name: str(m.key.folder(cfg.distill.store_dir)) for name, m in manifests.items()}
        precompute_s = time.perf_counter() - started
        start_serve(cfg)
        orchestrator = start_orchestrator(cfg, run_dir)
        try:
            ray.get(orchestrator.add_teachers.remote([t.model_dump() for t in cfg.teachers]))
            model = resolve_model(cfg.student.model, in_features=dataset.in_features,
                                  num_classes=dataset.num_classes, allowed_modules=cfg.run.allowed_factory_modules)
            jobs = [StudentJob(phase=f"{label}-r{r}", seed=r, terms=distill_terms(cfg.distill), use_teachers=True, model=model,
                               student=cfg.student, data=cfg.data, control=RayRunControl(orchestrator), source=source,
                               stores=stores,
                               distill=cfg.distill.model_copy(update={"batches_per_request": per_request}
                                                              if per_request else {}))
                    for r in range(args.repeats) for label, (source, per_request) in SOURCES.items()]
            phases = train_students(jobs, cfg)
        finally:
            ray.get(orchestrator.close.remote())
            ray.kill(orchestrator)

    unit = "tokens" if "tokens_per_s" in phases["served-r0"] else "samples"
    rates = {s: [phases[f"{s}-r{r}"][f"{unit}_per_s"] for r in range(args.repeats)] for s in SOURCES}
    medians = {s: statistics.median(v) for s, v in rates.items()}
    waits = {s: statistics.median(phases[f"{s}-r{r}"]["targets_s"] / phases[f"{s}-r{r}"]["steps"] * 1000
                                  for r in range(args.repeats)) for s in SOURCES}
    result = {"machine": describe_machine(), "config": args.config, "repeats": args.repeats, "unit": unit,
              "title": title, "samples_per_s": rates, "median_samples_per_s": medians,
              "ratio_to_precomputed": {s: _spread([a / b for a, b in zip(rates[s], rates["precomputed"])])
                                       for s in SOURCES},
              "median_targets_ms_per_step": waits,
              "steps_per_phase": phases["served-r0"]["steps"], "prefetch": cfg.distill.prefetch,
              "precompute_s": precompute_s, "store_rows": sum(m.rows for m in manifests.values()),
              "batches_per_request": cfg.distill.batches_per_request}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    table = render(result)
    (RESULTS / f"{args.name}.md").write_text(table)
    print(table)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def render(result: dict) -> str:
    unit = result.get("unit", "samples")
    lines = [f"# {result.get('title', 'Pipeline benchmark: where the soft targets come from')}", "",
             f"Machine: {result['machine']}. Config: `{result['config']}`, {result['repeats']} repeats "
             f"(interleaved), {result['steps_per_phase']} steps each, prefetch {result['prefetch']} batches, "
             f"{result['batches_per_request']} batches per request unless stated. The offline store was "
             f"written once by `distillery precompute` in {result['precompute_s']:.0f} s (teacher training or "
             f"cache load included), {result['store_rows']} rows.", "",
             f"| soft targets from | median {unit}/s | runs | ratio to precomputed (median of the per-repeat "
             f"ratios, min to max) | ms per step getting targets |",
             "|---|---|---|---|---|"]
    for source in SOURCES:
        runs = ", ".join(f"{v:.0f}" for v in result["samples_per_s"][source])
        ratio = result["ratio_to_precomputed"][source]
        lines.append(f"| {source} | {result['median_samples_per_s'][source]:.0f} | {runs} | "
                     f"{ratio['median']:.3f} ({ratio['min']:.3f} to {ratio['max']:.3f}) | "
                     f"{result['median_targets_ms_per_step'][source]:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
