"""Feature-based KD without Ray: a teacher's hooked features reach a student's projector and loss."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ingest.batches import Batch
from students.kd_terms import exit_key
from students.losses import CompositeLoss, Term, self_distillation_exits
from students.student_module import DistillationStudent, make_projector
from teachers.backend import ResolvedModel
from teachers.loaded import LoadedTeacher, TeacherAppArgs
from teachers.targets import TeacherTargets


def cnn_teacher(tmp_path, features):
    model = ResolvedModel("models.zoo:convnet", {"in_features": 64, "num_classes": 10, "channels": [6, 12]})
    torch.manual_seed(0)
    path = tmp_path / "cnn.safetensors"
    save_file(model.build().state_dict(), str(path))
    return LoadedTeacher.load(TeacherAppArgs(name="cnn", factory=model.factory, kwargs=model.kwargs,
                                             allowed_modules=list(model.allowed_modules), weights_path=str(path),
                                             in_features=64, temperature=2.0, features=features))


def test_teacher_features_train_a_projected_student(tmp_path):
    teacher = cnn_teacher(tmp_path, ["features.5"])
    assert teacher.feature_shapes() == {"features.5": [12, 8, 8]}
    x = np.random.default_rng(0).random((8, 64), dtype=np.float32)
    record = teacher.records([Batch.of_inputs("b0", x)])[0]
    assert record.features["features.5"].shape == (8, 12, 8, 8) and record.features["features.5"].dtype == np.float16
    targets = TeacherTargets({"cnn": record}, {"cnn": 1.0})

    student_model = ResolvedModel("models.zoo:convnet", {"in_features": 64, "num_classes": 10, "channels": [2, 4]})
    student = DistillationStudent(student_model.build(), ["features.5"], [("features.5", "cnn/features.5", [12, 8, 8])], 64)
    assert isinstance(student.projectors["features_5->cnn/features_5"], torch.nn.Conv2d)
    loss = CompositeLoss([Term("ce", 0.5), Term("dkd", 0.5), Term("fitnet", 1.0, {"student": "features.5", "teacher": "cnn/features.5"}),
                          Term("attention_transfer", 10.0, {"student": "features.5", "teacher": "cnn/features.5"}),
                          Term("rkd_distance", 1.0)], temperature=2.0)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        logits = student(torch.from_numpy(x))
        out = loss(logits, torch.zeros(8, dtype=torch.long), targets, student.features(), student.projectors)
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
        first = first if first is not None else out["fitnet"].item()
    assert set(out) == {"ce", "dkd", "fitnet", "attention_transfer", "rkd_distance", "total", "teacher_weight/cnn"}
    assert out["fitnet"].item() < first  # the projector and student learn to match the teacher's map


def test_unknown_layers_and_misaligned_shapes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        cnn_teacher(tmp_path, ["nope"])
    with pytest.raises(ValueError, match="differ in H, W"):
        make_projector([4, 8, 8], [12, 4, 4], "fitnet a -> b")
    assert isinstance(make_projector([16], [64], "x"), torch.nn.Linear)


def test_concurrent_forwards_keep_their_own_features(tmp_path):
    """A Serve replica answers requests on several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    teacher = cnn_teacher(tmp_path, ["features.5"])
    inputs = [np.full((n, 64), n / 10, dtype=np.float32) for n in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda x: teacher.records([Batch.of_inputs(f"b{len(x)}", x)])[0], inputs * 4))
    for record in records:
        assert record.features["features.5"].shape[0] == record.batch_size


def test_minilm_and_hidden_state_hints_between_transformers_of_different_sizes(tmp_path):
    """A 4-head, 2-layer teacher teaches a 2-head, 1-layer, narrower student."""
    model = ResolvedModel("models.zoo:row_transformer", {"in_features": 64, "num_classes": 10, "dim": 32,
                                                            "heads": 4, "layers": 2})
    torch.manual_seed(0)
    path = tmp_path / "t.safetensors"
    save_file(model.build().state_dict(), str(path))
    qkv = [f"blocks.1.attention.{n}" for n in ("query", "key", "value")]
    teacher = LoadedTeacher.load(TeacherAppArgs(name="tf", factory=model.factory, kwargs=model.kwargs,
                                                allowed_modules=list(model.allowed_modules), weights_path=str(path),
                                                in_features=64, temperature=2.0, features=qkv + ["blocks.1"]))
    assert teacher.feature_shapes()["blocks.1"] == [8, 32]
    x = np.random.default_rng(0).random((6, 64), dtype=np.float32)
    targets = TeacherTargets({"tf": teacher.records([Batch.of_inputs("b", x)])[0]}, {"tf": 1.0})
    small = ResolvedModel("models.zoo:row_transformer", {"in_features": 64, "num_classes": 10, "dim": 16,
                                                            "heads": 2, "layers": 1})
    s_qkv = [f"blocks.0.attention.{n}" for n in ("query", "key", "value")]
    student = DistillationStudent(small.build(), s_qkv, [("blocks.0", "tf/blocks.1", [8, 32])], 64)
    loss = CompositeLoss([Term("kd"), Term("minilm", 1.0, {"student": s_qkv, "teacher": [f"tf/{n}" for n in qkv],
                                                          "heads": 2}),
                          Term("fitnet", 1.0, {"student": "blocks.0", "teacher": "tf/blocks.1"})], temperature=2.0)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
    history = []
    for _ in range(40):
        out = loss(student(torch.from_numpy(x)), torch.zeros(6, dtype=torch.long), targets, student.features(),
                   student.projectors)
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
        history.append(out["minilm"].item())
    assert history[-1] < 0.5 * history[0]


def test_byot_exits_train_with_no_teacher():
    model = ResolvedModel("models.zoo:convnet", {"in_features": 64, "num_classes": 10, "channels": [2, 4]}).build()
    byot = Term("byot", 1.0, {"exits": ["features.2"], "deepest": "features.5", "feature_weight": 0.5})
    exits, hints = self_distillation_exits([byot])
    student = DistillationStudent(model, [], [], 64, exits, hints)
    assert not any(m.num_batches_tracked for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    loss = CompositeLoss([Term("ce", 1.0), byot], temperature=2.0)
    x = torch.from_numpy(np.random.default_rng(0).random((8, 64), dtype=np.float32))
    y = torch.arange(8) % 10
    optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
    head = student.projectors[exit_key("features.2")]

    def exit_ce():
        student(x)
        return torch.nn.functional.cross_entropy(head(student.features()["features.2"]), y).item()
    first = exit_ce()
    for _ in range(30):
        out = loss(student(x), y, None, student.features(), student.projectors)
        optimizer.zero_grad()
        out["total"].backward()
        optimizer.step()
    assert set(out) == {"ce", "byot", "total"}
    assert out["total"].item() == pytest.approx(out["ce"].item() + out["byot"].item())  # no renormalizing
    assert exit_ce() < first  # the shallow exit learns


def test_byot_params_are_checked():
    with pytest.raises(ValueError, match="params.exits must name"):
        self_distillation_exits([Term("byot", 1.0, {})])
    with pytest.raises(ValueError, match="needs params.deepest"):
        self_distillation_exits([Term("byot", 1.0, {"exits": ["a"], "feature_weight": 1.0})])


def test_a_hint_without_projector_needs_equal_shapes():
    model = ResolvedModel("models.zoo:convnet", {"in_features": 64, "num_classes": 10, "channels": [2, 4]}).build()
    student = DistillationStudent(model, [], [], 64, matched=[("features.5", "cnn/features.5", [4, 8, 8])])
    assert len(student.projectors) == 0
    with pytest.raises(ValueError, match=r"per-sample shape \[4, 8, 8\], teacher feature 'cnn/features.5' has \[12, 8, 8\]"):
        DistillationStudent(model, [], [], 64, matched=[("features.5", "cnn/features.5", [12, 8, 8])])
