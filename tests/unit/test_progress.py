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


def test_status_table_has_a_share_column():
    console = Console(width=160, record=True)
    console.print(status_table(STATUS))
    text = console.export_text()
    assert "share" in text and "62%" in text and "38%" in text
    quiet = Console(width=160, record=True)
    quiet.print(status_table({**STATUS, "progress": {}}))  # no training record yet: no share
    assert "%" not in quiet.export_text()
