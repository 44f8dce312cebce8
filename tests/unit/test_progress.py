"""The driver's progress line and status table show each teacher's weight and share."""

from rich.console import Console

from orchestration.progress import progress_line, status_table

RECORD = {"phase": "kd-seed0", "epoch": 2, "step": 40, "loss/total": 1.5, "teacher_set/version": 3,
          "teachers": ["cnn", "mlp"], "teacher/cnn/weight": 3.0, "teacher/mlp/weight": 1.0,
          "teacher/cnn/effective_weight": 0.62, "teacher/mlp/effective_weight": 0.38}
STATUS = {"run": "r", "teacher_set_version": 3, "progress": {"rank0": RECORD},
          "teachers": {n: {"weight": RECORD[f"teacher/{n}/weight"], "output_space": "classes:10", "model_version": "v",
                           "endpoint": f"serve:teacher-{n}"} for n in ("cnn", "mlp")}}


def test_progress_line_shows_static_weight_and_share():
    line = progress_line(STATUS)
    assert "teacher set v3: cnn(w=3, 62%), mlp(w=1, 38%)" in line and "loss 1.5000" in line


def test_progress_line_shows_the_step_of_the_phases_steps_and_the_time_left():
    record = {**RECORD, "eval/test_accuracy": 0.912, "throughput/samples_per_s": 812.0,
              "progress/steps_total": 120, "progress/eta_s": 185.4}
    line = progress_line({**STATUS, "progress": {"rank0": record}})
    assert line.startswith("kd-seed0: epoch 2 step 40/120 | loss 1.5000 | test_acc 0.912 | 812 samples/s | 3m05s left")
    assert "left" not in progress_line(STATUS) and "step 40 |" in progress_line(STATUS)  # a stream: no total


def test_each_phase_is_announced_once_as_it_starts_and_once_as_it_ends():
    from orchestration.progress import phase_changes

    announced = {}
    assert phase_changes(STATUS, announced) == ["kd-seed0: started"]
    assert phase_changes(STATUS, announced) == []
    done = {**STATUS, "progress": {"rank0": {**RECORD, "step": 160, "phase_done": True}}}
    assert phase_changes(done, announced) == ["kd-seed0: finished at step 160"] and phase_changes(done, announced) == []
    quick = {**STATUS, "progress": {"rank0": {**RECORD, "phase": "baseline-seed0", "phase_done": True}}}
    assert phase_changes(quick, announced) == ["baseline-seed0: started", "baseline-seed0: finished at step 40"]
    # kd-seed1 finished and kd-seed2 took over between two looks: its end comes from the orchestrator's list
    replaced = {**STATUS, "progress": {"rank0": {**RECORD, "phase": "kd-seed2", "step": 3}},
                "finished": {"kd-seed0": 160, "baseline-seed0": 40, "kd-seed1": 160}}
    assert phase_changes(replaced, announced) == ["kd-seed1: started", "kd-seed1: finished at step 160",
                                                  "kd-seed2: started"]


def test_status_table_has_a_share_column():
    console = Console(width=160, record=True)
    console.print(status_table(STATUS))
    text = console.export_text()
    assert "share" in text and "62%" in text and "38%" in text
    quiet = Console(width=160, record=True)
    quiet.print(status_table({**STATUS, "progress": {}}))  # no training record yet: no share
    assert "%" not in quiet.export_text()


def test_the_watch_dashboard_shows_students_teachers_faults_and_events():
    from orchestration.progress import dashboard

    record = {**RECORD, "loss/kd": 0.7, "throughput/samples_per_s": 812.0, "eval/test_accuracy": 0.91,
              "checkpoint/last_step": 30, "teacher/cnn/wait_ms": 4.25, "teacher/cnn/latency_ms": 37.5,
              "teacher/cnn/in_flight": 2,
              "faults/retries": 1, "faults/fallback_batches": 3}
    status = {**STATUS, "progress": {"rank0": record},
              "events": [{"event": "teacher_lost", "teacher": "old", "time": 1.0, "reason": "hung"}]}
    console = Console(width=160, record=True)
    console.print(dashboard(status))
    text = console.export_text()
    for expected in ("kd-seed0", "812 samples/s", "kd 0.7000", "total 1.5000", "test_accuracy 0.9100", "62%",
                     "4.2", "37.5", "latency (ms)", "retries 1", "fallback batches 3", "teacher_lost: teacher=old, reason=hung"):
        assert expected in text, expected
    row = next(line for line in text.splitlines() if "kd-seed0" in line)
    assert row.split("│")[-2].strip() == "30"  # last checkpoint
    starting = Console(width=160, record=True)
    starting.print(dashboard({**STATUS, "progress": {}}))
    assert "starting workers" in starting.export_text()


def test_a_stage_bar_completes_and_prints_each_stage_in_a_log():
    from orchestration.progress import StageBar

    console = Console(width=120, record=True)  # not a terminal: what `ray job submit` logs show
    with StageBar(console, "export demo", ("reading", "writing")) as stage:
        stage("reading")
        stage("writing")
    text = console.export_text()
    assert "export demo: reading" in text and "export demo: writing" in text
    assert "export demo: done" in text and "2/2" in text


def test_the_sweep_header_draws_a_bar_of_the_cells_done():
    from planning.sweep import cell_header

    console = Console(width=120, record=True)
    console.print(cell_header("sweep demo: cell 3/4", 2, 4, "student 2k, 256 training sequences"))
    line = console.export_text().splitlines()[0]
    assert line.startswith("sweep demo: cell 3/4") and "student 2k" in line
    bar = line.removeprefix("sweep demo: cell 3/4 ").split("student")[0]
    assert len(bar) == 24 + 1 and bar.count("━") == 12  # half of a 24-wide bar (the rest is drawn in colour only)


def test_progress_blocks_cut_whole_batches_and_keep_every_row():
    import pyarrow as pa

    from orchestration.progress import progress_blocks

    table = pa.table({"row": list(range(1000))})
    blocks = progress_blocks(table, 64)  # 16 batches: one block each
    assert [b.num_rows for b in blocks] == [64] * 15 + [40]
    many = progress_blocks(pa.table({"row": list(range(10_000))}), 64, max_blocks=32)  # 157 batches in 32 blocks
    assert len(many) == 32 and all(b.num_rows % 64 == 0 for b in many[:-1])
    assert pa.concat_tables(many).column("row").to_pylist() == list(range(10_000))
    assert [b.num_rows for b in progress_blocks(pa.table({"row": [1, 2]}), 512)] == [2]
