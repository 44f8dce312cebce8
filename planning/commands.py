"""`distillery plan`, `distillery fit-law` and `distillery sweep` (registered by orchestration.cli)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from planning.laws import PAPER_COST

console = Console()
DEFAULT_LAW = "runs/law.json"
PARAMS_OPTION = typer.Option("non_embedding", "--params",
                             help="how N counts parameters: non_embedding (the paper's convention) or all")


def _flops(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.3g} FLOPs"


def plan_command(
        student_params: float = typer.Option(..., "--student-params", help="student parameters, e.g. 1e8, counted as the "
                                                                           "law counts them (non-embedding unless the "
                                                                           "law file says all)"),
        tokens: Optional[float] = typer.Option(None, "--tokens", help="distillation tokens for the student"),
        compute: Optional[float] = typer.Option(None, "--compute", help="or a compute budget in FLOPs"),
        teacher_loss: Optional[float] = typer.Option(None, "--teacher-loss", help="teacher cross-entropy (nats per "
                                                                                  "token, in the law's units)"),
        teacher_params: Optional[float] = typer.Option(None, "--teacher-params", help="teacher parameters"),
        teacher_tokens: Optional[float] = typer.Option(None, "--teacher-tokens",
                                                       help="tokens the teacher was trained on (with --teacher-params "
                                                            "and no --teacher-loss: its loss from the law)"),
        target: Optional[float] = typer.Option(None, "--target-loss", help="a student loss to reach: compute per route"),
        scenario: Optional[str] = typer.Option(
            None, "--scenario", help="what the compute counts of the teacher: free (nothing), forwards (its forwards "
                                     "on the student's tokens; the default with --teacher-params) or training (its "
                                     "training too; needs --teacher-tokens)"),
        n_ctx: float = typer.Option(PAPER_COST.n_ctx, "--n-ctx", help="context length in the forward cost F(N)"),
        n_vocab: float = typer.Option(PAPER_COST.n_vocab, "--n-vocab", help="vocabulary size in F(N)"),
        aspect_ratio: float = typer.Option(PAPER_COST.rho, "--aspect-ratio", help="width / depth (rho) in F(N)"),
        law_path: Optional[str] = typer.Option(
            None, "--law", help=f"paper (the published law), or a law file from `distillery fit-law` or `sweep`; "
                                f"default: {DEFAULT_LAW} when it exists, else paper")) -> None:
    """Predict a distilled student's loss; the compute-optimal split; distil or train supervised; the capacity gap."""
    from planning.laws import ForwardCost, resolve_law
    from planning.plan import Costing, Teacher, plan

    law = resolve_law(law_path, DEFAULT_LAW)
    scenario = scenario or ("forwards" if teacher_params is not None else "free")
    cost = ForwardCost(n_ctx=n_ctx, n_vocab=n_vocab, rho=aspect_ratio, omega=PAPER_COST.omega)
    result = plan(law, student_params=student_params, tokens=tokens, compute=compute, target=target,
                  teacher=Teacher(loss=teacher_loss, params=teacher_params, tokens=teacher_tokens),
                  costing=Costing(scenario, cost))
    console.print(f"law: {law.source}\nlosses: {law.units}"
                  + ("; for another data set or tokenizer fit a law to your own runs (`distillery fit-law`)"
                     if law.primed == "published" else "")
                  + f"\nparameters: counted {law.parameter_count.replace('_', '-')}, as the law was fitted; give "
                    f"--student-params and --teacher-params the same way", highlight=False)
    table = _plan_table(result, law, scenario, cost, target, student_params)
    console.print(table)


def _plan_table(result: Any, law: Any, scenario: str, cost: Any, target: Optional[float], student_params: float) -> Table:
    """The plan as a table: the student, compute, losses, the budget's best teacher, the capacity
    gap and, with a target loss, the compute of each route to it."""
    from planning.plan import SCENARIOS

    n_ctx, n_vocab, aspect_ratio = cost.n_ctx, cost.n_vocab, cost.rho
    table = Table(title="distillation plan", show_header=False)
    table.add_row("student", f"{result.student_params:.3g} parameters, {result.student_tokens:.3g} tokens")
    table.add_row("compute", f"{result.compute:.3g} FLOPs, scenario {scenario}: {SCENARIOS[scenario]} (training "
                             f"3 F(N) a token, a forward F(N); F with context {n_ctx:g}, vocabulary {n_vocab:g}, "
                             f"width/depth {aspect_ratio:g})")
    table.add_row("teacher loss", f"{result.teacher_loss:.4f}")
    table.add_row("distilled student loss", f"{result.distilled_loss:.4f}")
    table.add_row("supervised, same compute", f"{result.supervised_loss:.4f} "
                  f"({'distilling is better' if result.distillation_helps else 'supervised is better'})")
    split = result.trained_teacher
    table.add_row("teacher trained in the budget",
                  f"best: {split.teacher_params:.3g}-parameter teacher on {split.teacher_tokens:.3g} tokens "
                  f"({split.teacher_share:.0%} of the compute, loss {split.teacher_loss:.4f}), student on "
                  f"{split.student_tokens:.3g} tokens -> {split.student_loss:.4f}")
    gap = result.gap
    if gap.teacher_too_strong:
        verdict = (f"this teacher is beyond the best one for this student: a teacher of loss "
                   f"{gap.best_teacher_loss:.4f} gives {gap.best_student_loss:.4f}, this one {gap.student_loss:.4f}")
    elif gap.no_optimum:
        verdict = "none: a stronger teacher helps this student all the way down to the law's irreducible loss"
    else:
        verdict = (f"none: the best teacher for this student has loss {gap.best_teacher_loss:.4f} "
                   f"(student {gap.best_student_loss:.4f}); this one is weaker, a stronger one would help")
    table.add_row("capacity gap", verdict)
    if target is not None:
        routes = {"supervised": result.compute_supervised,
                  f"distil, this teacher ({scenario})": result.compute_existing_teacher,
                  "distil, teacher trained too": result.compute_training_teacher}
        cheapest = min(routes, key=routes.get)
        for name, value in routes.items():
            table.add_row(f"reach {target:.4f}: {name}", _flops(value) + ("  <- cheapest" if name == cheapest
                                                                            and math.isfinite(value) else ""))
    for warning in law.outside_fitted_range(params=student_params, tokens=result.student_tokens,
                                            teacher_loss=result.teacher_loss):
        table.add_row("[yellow]extrapolating[/yellow]", warning)
    return table


def fit_law_command(
        runs: list[str] = typer.Argument(..., help="run folders (runs/<name>) or folders of runs"),
        out: str = typer.Option(DEFAULT_LAW, "--out", help="where to write the coefficients"),
        held_out: Optional[list[str]] = typer.Option(None, "--held-out", help="run names left out of the fit "
                                                                               "(their error is reported)"),
        params: str = PARAMS_OPTION) -> None:
    """Fit the scaling laws to the runs the system recorded; report the fit's error."""
    from pathlib import Path

    from planning.history import collect
    from planning.fit import fit_law
    from planning.sweep import write_report

    history = collect(runs, params)
    for line in history.skipped:
        console.print(f"[dim]left out: {line}[/dim]", highlight=False)
    held = set(held_out or [])
    fit = fit_law(history.supervised, history.distilled, held_out=lambda p: p.run in held, parameter_count=params)
    write_report(Path(out), fit, history, held, console, f"Scaling-law fit to {', '.join(runs)}")


def sweep_command(run_job: Callable[[str, Console], Any]):
    """The `sweep` command, running each cell with `run_job(config_path, console)`."""

    def sweep(config: str = typer.Argument(..., help="sweep config, e.g. deploy/configs/sweep.yaml"),
              refit: bool = typer.Option(False, "--refit", help="fit the cells already run, run nothing"),
              params: str = PARAMS_OPTION) -> None:
        """Run a grid of teacher sizes, student sizes and token budgets; fit the laws to it."""
        from planning.sweep import run_sweep

        run_sweep(config, run_job, console, refit_only=refit, parameter_count=params)

    return sweep
