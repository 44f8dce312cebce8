"""A run's finished phases are kept with the fingerprint of the rows they trained on: a rerun
of the same run on other rows is refused instead of showing the old figures as this data's."""

import json

import pytest

from cluster import ConfigError
from orchestration.run import RunState


def test_finished_phases_resume_on_the_same_rows_and_are_refused_on_others(tmp_path):
    state = RunState(tmp_path)
    state.check_data("rows-a", "run 'r'")
    state.finish("kd-seed0", {"test_accuracy": 0.9})
    again = RunState(tmp_path)
    again.check_data("rows-a", "run 'r'")  # the same rows: the finished phase stands
    assert again.phases == {"kd-seed0": {"test_accuracy": 0.9}}
    with pytest.raises(ConfigError, match=r"kd-seed0.*trained on other rows \(fingerprint rows-a, now rows-b\).*"
                                          r"--run-name"):
        RunState(tmp_path).check_data("rows-b", "run 'r'")


def test_a_state_written_before_fingerprints_were_kept_resumes_and_keeps_one_from_then_on(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"phases": {"baseline-seed0": {"test_accuracy": 0.8}}}))
    state = RunState(tmp_path)
    state.check_data("rows-a", "run 'r'")
    state.finish("kd-seed0", {"test_accuracy": 0.9})
    assert json.loads((tmp_path / "state.json").read_text())["data"] == "rows-a"
