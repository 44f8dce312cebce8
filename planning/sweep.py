"""`distillery sweep SWEEP.yaml`: a grid of teacher sizes, student sizes and token budgets,
run on the cluster as ordinary runs, then the scaling laws fitted to what they measured.

Each (student size, token budget) is one run of the base config: every teacher of the grid
(trained once, then cached), a student without KD (a supervised point) and one dense
token-level KD student per teacher (distilled points). The fit leaves out the points of the
`held_out` budgets and reports its error on them; the sweep folder gets `law.json` (for
`distillery plan --law`) and, beside it, `law.md` (coefficients, errors, the measured capacity
gap), `law.points.json` and `law.png` (measured against predicted).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from pydantic import Field, model_validator
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cluster import Strict, check_name, read_yaml_file, validate_model
from planning.fit import FREE_PRIMED_POINTS, FitError, LawFit, Point, fit_law
from planning.history import History, collect


class SweepTeacher(Strict):
    name: str
    config: dict[str, Any] = Field(description="overrides of the base teacher's model config (n_layer, n_embd, ...)")


class SweepConfig(Strict):
    name: str
    base: str = Field(description="the language-model run config the grid varies (its first teacher is the template)")
    output_dir: str = "runs"
    teachers: list[SweepTeacher]
    students: list[dict[str, Any]] = Field(description="overrides of the base student's model config, one per size")
    budgets: list[int] = Field(description="data.student_train_samples of each budget (the tokens follow)")
    held_out: list[int] = Field(default_factory=list, description="budgets whose points the fit leaves out")
    seeds: Optional[list[int]] = None

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        check_name(self.name)
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"teachers: give one or more teachers with unique names, got {names}")
        if not self.students or not self.budgets:
            raise ValueError("students and budgets: the grid needs at least one of each")
        unknown = sorted(set(self.held_out) - set(self.budgets))
        if unknown:
            raise ValueError(f"held_out: {unknown} are not budgets of the grid {self.budgets}")
        if set(self.held_out) == set(self.budgets):
            raise ValueError("held_out: leave at least one budget to fit on")
        return self


def load_sweep(path: str | Path) -> SweepConfig:
    return validate_model(SweepConfig, read_yaml_file(path), str(path))


def run_config(sweep: SweepConfig, student: int, budget: int) -> dict[str, Any]:
    """The run config of one grid cell, as a plain dict (written next to the run)."""
    base = read_yaml_file(sweep.base)
    if base.get("data", {}).get("dataset") != "stdlib_functions" or not base.get("teachers"):
        raise ValueError(f"sweep base {sweep.base}: needs a language-model config (data.dataset stdlib_functions) "
                         f"with a teacher to use as the template")
    template = base["teachers"][0]
    teachers = []
    for teacher in sweep.teachers:
        model = dict(template["model"])
        kwargs = dict(model.get("kwargs", {}))
        kwargs["config"] = {**kwargs.get("config", {}), **teacher.config}
        teachers.append({**template, "name": teacher.name, "model": {**model, "kwargs": kwargs}})
    student_model = dict(base["student"]["model"])
    student_kwargs = dict(student_model.get("kwargs", {}))
    student_kwargs["config"] = {**student_kwargs.get("config", {}), **sweep.students[student]}
    methods = {f"from-{t.name}": {"terms": [{"name": "kd"}], "dense": True, "teachers": [t.name]}
               for t in sweep.teachers}
    run = {**base.get("run", {}), "name": cell_name(sweep, student, budget), "output_dir": sweep.output_dir,
           "baseline": True}
    if sweep.seeds is not None:
        run["seeds"] = sweep.seeds
    return {**base, "run": run, "teachers": teachers,
            "student": {**base["student"], "model": {**student_model, "kwargs": student_kwargs}},
            "data": {**base["data"], "student_train_samples": budget, "generated": None},
            "distill": {**{k: v for k, v in base.get("distill", {}).items() if k not in ("methods", "terms")},
                        "methods": methods}}


def cell_name(sweep: SweepConfig, student: int, budget: int) -> str:
    return f"{sweep.name}-s{student}-n{budget}"


def run_sweep(path: str | Path, run_job: Callable[[str, Console], Any], console: Optional[Console] = None,
              refit_only: bool = False, parameter_count: str = "non_embedding") -> LawFit:
    """Run every cell not finished yet (none with `refit_only`) with `run_job(config_path,
    console)` (the caller's run command: a finished cell is skipped, a cut-short one resumes),
    then fit (parameters counted as `parameter_count` says) and report."""
    console = console or Console()
    sweep = load_sweep(path)
    folder = Path(sweep.output_dir) / sweep.name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    cells = [(s, b) for s in range(len(sweep.students)) for b in sweep.budgets]
    start = time.monotonic()
    for i, (student, budget) in enumerate([] if refit_only else cells, 1):
        config = folder / "configs" / f"{cell_name(sweep, student, budget)}.yaml"
        config.write_text(yaml.safe_dump(run_config(sweep, student, budget), sort_keys=False))
        elapsed = time.monotonic() - start
        eta = f", about {elapsed / (i - 1) * (len(cells) - i + 1) / 60:.0f} min left" if i > 1 else ""
        console.print(cell_header(f"sweep {sweep.name}: cell {i}/{len(cells)}", i - 1, len(cells),
                                  f"student {sweep.students[student]}, {budget} training sequences "
                                  f"({elapsed / 60:.0f} min so far{eta})"))
        run_job(str(config), console)
    history = collect([Path(sweep.output_dir) / cell_name(sweep, s, b) for s, b in cells], parameter_count)
    held = {cell_name(sweep, s, b) for s, b in cells if b in sweep.held_out}
    fit = fit_law(history.supervised, history.distilled, held_out=lambda p: p.run in held,
                  parameter_count=parameter_count)
    write_report(folder / "law.json", fit, history, held, console, f"Scaling-law sweep {sweep.name}")
    return fit


def cell_header(title: str, done: int, total: int, details: str) -> Table:
    """`title [bar] details`: the sweep's progress bar, printed above each cell's own run output
    (a cell's run draws its own live view, so the bar is not a live one)."""
    line = Table.grid(padding=(0, 1))
    line.add_row(Text(title, style="bold"), ProgressBar(total=total, completed=done, width=24), Text(details))
    return line


def _error_line(label: str, error: Optional[FitError]) -> str:
    if error is None:
        return f"| {label} | 0 | | | |"
    return f"| {label} | {error.points} | {error.rmse:.4f} | {error.mean_abs_pct:.2f} | {error.max_abs_pct:.2f} |"


def _natural(run: str) -> list:
    """Sort key that puts sweep-s0-n256 before sweep-s0-n1024."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", run)]


def capacity_gap_lines(distilled: list[Point]) -> list[str]:
    """Per (student, budget): student loss by teacher loss (mean over seeds), and whether a
    stronger teacher gave a worse student (the capacity gap, measured). With several seeds, a
    gap smaller than the two students' spreads (std) added is called within the seeds' spread."""
    import statistics

    lines = []
    cells: dict[tuple[str, float], dict[float, list[float]]] = {}
    for p in distilled:
        cells.setdefault((p.run, p.params), {}).setdefault(p.teacher_loss, []).append(p.loss)
    for (run, params), by_teacher in sorted(cells.items(), key=lambda item: _natural(item[0][0])):
        ordered = sorted((lt, statistics.fmean(v)) for lt, v in by_teacher.items())  # strongest teacher first
        best = min(ordered, key=lambda item: item[1])
        pairs = ", ".join(f"L_T {lt:.3f} -> L_S {ls:.3f}" for lt, ls in ordered)
        if best is ordered[0]:
            verdict = "no capacity gap: the strongest teacher gave the best student"
        else:
            spread = sum(statistics.stdev(by_teacher[lt]) if len(by_teacher[lt]) > 1 else 0.0
                         for lt in (best[0], ordered[0][0]))
            margin = ordered[0][1] - best[1]
            verdict = (f"capacity gap: the best student came from the teacher with L_T {best[0]:.3f}, not the "
                       f"strongest, by {margin:.3f} nats")
            if margin <= spread:
                verdict += f", within the seeds' spread ({spread:.3f}): not a clear gap"
        lines.append(f"- {run} (N = {params:,.0f}): {pairs}; {verdict}")
    return lines


def seed_table_lines(history: History) -> list[str]:
    """Held-out perplexity of every student of every run: mean and spread (std) over seeds,
    without KD and from each teacher (teacher perplexity in the header)."""
    import statistics

    cells: dict[str, dict[str, list[float]]] = {}
    teacher_ppl: dict[str, float] = {}
    for p in history.supervised:
        if p.teacher:
            teacher_ppl[p.teacher] = math.exp(p.loss)
        elif p.phase.startswith("baseline-"):
            cells.setdefault(p.run, {}).setdefault("", []).append(math.exp(p.loss))
    for p in history.distilled:
        teacher_ppl.setdefault(p.teacher, math.exp(p.teacher_loss))
        cells.setdefault(p.run, {}).setdefault(p.teacher, []).append(math.exp(p.loss))
    teachers = sorted(teacher_ppl, key=teacher_ppl.get, reverse=True)

    def cell(values: list[float]) -> str:
        if not values:
            return ""
        spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.1f}{spread} ({len(values)})"

    lines = ["| run | no KD | " + " | ".join(f"from {t} ({teacher_ppl[t]:.1f})" for t in teachers) + " |",
             "|---|---|" + "---|" * len(teachers)]
    for run, by in sorted(cells.items(), key=lambda item: _natural(item[0])):
        lines.append(f"| {run} | {cell(by.get('', []))} | " + " | ".join(cell(by.get(t, [])) for t in teachers) + " |")
    return lines


PRIMED_HOW = {"fitted": "fitted, from starts at the supervised fit's and at the published values",
              "tied": f"tied to the supervised law's: fewer than {FREE_PRIMED_POINTS} distilled points to fit them",
              "published": "the published values"}


def write_report(law_path: Path, fit: LawFit, history: History, held: set[str], console: Console, title: str) -> None:
    """The law at `law_path`; beside it `<stem>.md`, `<stem>.points.json` and `<stem>.png`."""
    law_path = Path(law_path)
    law_path.parent.mkdir(parents=True, exist_ok=True)
    law_path.write_text(fit.law.with_source(str(law_path)).to_json())
    law = fit.law
    points = []
    for kind, group in (("supervised", history.supervised), ("distilled", history.distilled)):
        for p in group:
            predicted = (law.supervised.loss(p.params, p.tokens) if p.teacher_loss is None
                         else law.loss(p.params, p.tokens, p.teacher_loss))
            points.append({**asdict(p), "kind": kind, "predicted": float(predicted), "held_out": p.run in held})
    stem = law_path.with_suffix("")
    stem.with_suffix(".points.json").write_text(json.dumps(points, indent=2))
    plot_measured_vs_predicted(points, stem.with_suffix(".png"))
    s = law.supervised
    lines = [f"# {title}", "",
             f"Fitted on {fit.supervised_train.points} supervised and "
             f"{fit.distilled_train.points if fit.distilled_train else 0} distilled points; the held-out runs' "
             f"points were left out of the fit. Losses are held-out cross-entropies (nats per completion token); "
             f"N counts {law.parameter_count.replace('_', '-')} parameters.", "",
             f"Supervised: E {s.E:.4f}, A {s.A:.4g}, B {s.B:.4g}, alpha {s.alpha:.4f}, beta {s.beta:.4f}, "
             f"gamma {s.gamma:.4f}{'' if fit.gamma_fitted else ' (fixed: too few points to fit it)'}.",
             f"Distillation: c0 {law.c0:.4f}, c1 {law.c1:.4f}, d1 {law.d1:.4f}, f1 {law.f1:.4f}; A' {law.A:.4g}, "
             f"B' {law.B:.4g}, alpha' {law.alpha:.4f}, beta' {law.beta:.4f}, gamma' {law.gamma:.4f} "
             f"({PRIMED_HOW[law.primed]}).", "",
             "| points | n | RMSE (nats) | mean abs error % | max abs error % |", "|---|---|---|---|---|",
             _error_line("supervised, fitted on", fit.supervised_train),
             _error_line("supervised, held out", fit.supervised_heldout),
             _error_line("distilled, fitted on", fit.distilled_train),
             _error_line("distilled, held out", fit.distilled_heldout), "",
             "Measured capacity gap (student loss by teacher loss, strongest teacher first):", "",
             *capacity_gap_lines(history.distilled), "",
             "Held-out perplexity of the students: mean ± std over seeds (seeds); teachers' perplexity in the header:",
             "", *seed_table_lines(history), "",
             f"![measured against predicted]({stem.with_suffix('.png').name})", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    console.print("\n".join(lines[:14]), highlight=False)
    console.print(f"law: {law_path}; report: {stem.with_suffix('.md')}")


def plot_measured_vs_predicted(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, marker in (("supervised", "o"), ("distilled", "^")):
        for held, color in ((False, "tab:blue"), (True, "tab:red")):
            chosen = [p for p in points if p["kind"] == kind and p["held_out"] == held]
            if chosen:
                ax.scatter([p["predicted"] for p in chosen], [p["loss"] for p in chosen], marker=marker, c=color,
                           label=f"{kind}, {'held out' if held else 'fitted on'}")
    values = [p["loss"] for p in points] + [p["predicted"] for p in points]
    lo, hi = min(values) * 0.98, max(values) * 1.02
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted cross-entropy (nats)")
    ax.set_ylabel("measured cross-entropy (nats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
