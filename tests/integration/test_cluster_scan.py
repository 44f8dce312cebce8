"""The check of a streamed split as Ray tasks on the session's cluster (`ingest.cluster_scan`):
the same split, counts, fingerprint, test rows and notes as the check in one process without
Ray, the same refusals (an id repeated across two files, a bad label in one), and a second
check that finds every file in the nodes' caches."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.config import DataConfig, SourceConfig
from ingest.file_data import DataError
from ingest.loading import load_dataset

pytestmark = pytest.mark.integration
FEATURES, PARTS, ROWS = 4, 3, 40
TOKENIZER = "pkg:ingest/tokenizers/stdlib-bpe-1024"


def _classes(folder, labels=None, ids=None) -> SourceConfig:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(PARTS):
        key = ids(part) if ids else [f"p{part}-{i}" for i in range(ROWS)]
        digit = labels(part) if labels else (np.arange(ROWS) % 3).tolist()
        pq.write_table(pa.table({"key": key, "pixels": rng.normal(size=(ROWS, FEATURES)).tolist(), "digit": digit}),
                       folder / f"part-{part}.parquet")
    return SourceConfig(format="parquet", train=str(folder / "part-*.parquet"), test_fraction=0.2, stream=True,
                        scan_cpus=0.5, columns={"input": "pixels", "label": "digit", "id": "key"})


def _language_model(folder) -> DataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(PARTS):
        with open(folder / f"part-{part}.jsonl", "w") as out:
            for i in range(ROWS):
                out.write(json.dumps({"id": f"p{part}-{i}", "prompt": f"def f{part}_{i}(x):",
                                      "completion": f"return x * {i} + {part}"}) + "\n")
    return DataConfig(tokenizer=TOKENIZER, sequence_length=24, source=SourceConfig(
        format="jsonl", train=str(folder / "part-*.jsonl"), test_fraction=0.2, stream=True, scan_cpus=0.5,
        columns={"prompt": "prompt", "completion": "completion", "id": "id"}))


def _without_ray(data: DataConfig):
    """The check a driver without Ray makes, in this process."""
    return load_dataset(data)


def _same(a, b) -> None:
    assert a.fingerprint == b.fingerprint and a.streamed.rows == b.streamed.rows
    np.testing.assert_array_equal(a.streamed.class_counts, b.streamed.class_counts)
    assert a.streamed.target_tokens == b.streamed.target_tokens
    assert a.test.ids.tolist() == b.test.ids.tolist() and a.notes == b.notes
    np.testing.assert_array_equal(a.test.x, b.test.x)


@pytest.mark.parametrize("kind", ["classes", "language model"])
def test_the_cluster_checks_a_split_as_one_process_does(ray_cluster, tmp_path, kind):
    data = (DataConfig(source=_classes(tmp_path / "data")) if kind == "classes"
            else _language_model(tmp_path / "data"))
    heard = []
    on_cluster = load_dataset(data, progress=heard.append, on_cluster=True)
    assert any("checked by Ray tasks" in line for line in heard), heard
    _same(on_cluster, _without_ray(data))
    assert on_cluster.streamed.rows + len(on_cluster.test.ids) == PARTS * ROWS

    heard.clear()
    again = load_dataset(data, progress=heard.append, on_cluster=True)
    assert any(f"({PARTS} from the nodes' caches" in line for line in heard), heard
    _same(again, on_cluster)


def test_the_cluster_refuses_what_one_process_refuses(ray_cluster, tmp_path):
    repeated = DataConfig(source=_classes(tmp_path / "repeated", ids=lambda part: [
        f"p{min(part, 1)}-{i}" for i in range(ROWS)]))  # files 1 and 2 hold the same ids
    heard = []
    with pytest.raises(DataError, match=r"row ids repeat \(\d+ ids more than once\)") as cluster:
        load_dataset(repeated, progress=heard.append, on_cluster=True)
    assert any("checked by Ray tasks" in line for line in heard), heard
    with pytest.raises(DataError) as alone:
        _without_ray(repeated)
    assert str(cluster.value) == str(alone.value)

    bad = DataConfig(source=_classes(tmp_path / "bad", labels=lambda part: [-1 if part == 1 else 0] * ROWS))
    with pytest.raises(DataError, match="part-1.parquet") as cluster:
        load_dataset(bad, on_cluster=True)
    with pytest.raises(DataError) as alone:
        _without_ray(bad)
    assert str(cluster.value) == str(alone.value)
