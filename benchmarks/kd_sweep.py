"""Why the quickstart's setup: KD gain against labelled-set size, student width, alpha and T.

    python -m benchmarks.kd_sweep [--seeds 0 1 2]

Plain PyTorch, no Ray (minutes on 2 cores): the quickstart's teachers (trained or loaded
from the cache), students trained with the same losses and teacher merging as a run, on
each setting of the grid, with and without KD. Writes `benchmarks/results/kd_sweep.md`.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe_machine
from cluster.config import ModelSpec
from cluster.paths import teacher_cache_dir
from ingest.loading import load_dataset, student_subset
from orchestration.config import load_run_config
from orchestration.teacher_training import accuracy, train_or_load_teacher
from students.losses import LOSSES
from teachers.backend import load_teacher, resolve_model
from teachers.soft_targets import pack_soft_targets
from teachers.targets import TeacherTargets

RESULTS = Path(__file__).parent / "results"
# (labelled samples, student hidden sizes, alpha, temperature)
GRID = [(100, [32], 0.3, 4.0), (150, [32], 0.3, 4.0), (150, [32], 0.5, 2.0), (150, [32], 0.1, 8.0),
        (150, [16], 0.3, 4.0), (300, [32], 0.3, 4.0), (None, [32], 0.3, 4.0)]


def train_student(dataset, teachers, samples, hidden, loss, alpha, temperature, seed, epochs=40, lr=0.01,
                  batch_size=32) -> float:
    train = student_subset(dataset.train, samples)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    with torch.no_grad():
        logits = {name: t(x).numpy() for name, t in teachers.items()}
    torch.manual_seed(seed)
    student = resolve_model(ModelSpec(factory="models.zoo:mlp", kwargs={"hidden": hidden}),
                            in_features=dataset.in_features, num_classes=dataset.num_classes).build()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            targets = None if loss == "ce" else TeacherTargets(
                {n: pack_soft_targets(v[idx.numpy()], batch_id="sweep", teacher=n, teacher_version="-",
                                      temperature=temperature, output_space=dataset.output_space,
                                      dense_max_classes=1024, top_k=64) for n, v in logits.items()},
                {n: 1.0 for n in logits})
            terms = LOSSES.get(loss)(student(x[idx]), y[idx], targets, alpha=alpha, temperature=temperature)
            opt.zero_grad()
            terms["total"].backward()
            opt.step()
    return accuracy(student, dataset.test.x, dataset.test.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deploy/configs/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_run_config(args.config)
    dataset = load_dataset(cfg.data)
    teachers = {}
    for t in cfg.teachers:
        model = resolve_model(t.model, in_features=dataset.in_features, num_classes=dataset.num_classes)
        trained = train_or_load_teacher(t.name, model, t.training, cfg.data, dataset, teacher_cache_dir())
        teachers[t.name] = load_teacher(model, trained.weights_path)
    lines = ["# KD gain across setups (plain PyTorch, the quickstart's teachers and losses)", "",
             f"Machine: {describe_machine()}. "
             f"Command: `python -m benchmarks.kd_sweep --seeds {' '.join(map(str, args.seeds))}`; "
             "student: MLP, AdamW lr 0.01, 40 epochs, batch 32; test accuracy mean ± std over seeds.", "",
             "| labelled samples | student hidden | alpha / T | no KD | KD | gain |", "|---|---|---|---|---|---|"]
    for samples, hidden, alpha, temperature in GRID:
        runs = {loss: [train_student(dataset, teachers, samples, hidden, loss, alpha, temperature, s)
                       for s in args.seeds] for loss in ("ce", "hinton_kd")}
        mean = {k: statistics.fmean(v) for k, v in runs.items()}
        std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in runs.items()}
        n = samples if samples is not None else len(dataset.train.y)
        line = (f"| {n} | {hidden} | {alpha} / {temperature:g} | {mean['ce']:.4f} ± {std['ce']:.4f} | "
                f"{mean['hinton_kd']:.4f} ± {std['hinton_kd']:.4f} | {100 * (mean['hinton_kd'] - mean['ce']):+.2f} |")
        lines.append(line)
        print(line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kd_sweep.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
