"""Run folders on a local path or on object storage.

`run.output_dir` may be a local folder or any URI pyarrow opens (`s3://bucket/prefix`, `gs://`,
`abfs://`, `hdfs://`; options such as an S3 endpoint go in the query string:
`s3://bucket/runs?endpoint_override=host:9000&scheme=http`). With a URI nothing needs a shared
POSIX volume:

- Ray Train writes and reads the checkpoints there itself (`storage_path` + `storage_filesystem`);
- continual replay stores (`replay/`), generated completions (`generated/`) and the audit
  files (`audit/`) are written there directly by the processes that make them;
- the driver keeps a working copy of the run's small files (config, state, metrics, results,
  reports) under the cache (`<DISTILLERY_CACHE_DIR>/runs/<hash of the URI>/<run>`), pulls
  it from the URI when it starts (so a new driver on another machine resumes) and pushes it
  back as phases finish and when the run ends;
- train workers upload the students they export straight to the URI.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from cluster.node_cache import mark_used
from cluster.paths import default_cache_dir, is_uri

TRAIN_FOLDER = "train"  # Ray Train's checkpoints: read and written by Ray Train itself
# written straight to the run's location by the work that makes them, read there by the workers:
# continual replay stores, sequence-level KD's generated completions, and every process's audit file
DIRECT_FOLDERS = ("replay", "generated", "audit")
NOT_MIRRORED = (TRAIN_FOLDER, *DIRECT_FOLDERS)  # folders the working copy never pulls or pushes
PUSH_EVERY_S = 15.0
ATTEMPT_PREFIX = "attempt-"
logger = logging.getLogger(__name__)


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with `parts` appended to its path, its query string kept."""
    base, _, query = uri.partition("?")
    joined = "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return f"{joined}?{query}" if query else joined


def open_uri(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for `uri` and the path inside it."""
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad or unreachable URI
        raise ValueError(f"{uri!r}: pyarrow cannot open it ({exc}); give a local folder or a URI such as "
                         f"s3://bucket/prefix (options in the query string: ?endpoint_override=host:port)") from exc


def upload_folder(local: Path, uri: str, skip: tuple[str, ...] = (),
                  unchanged: Callable[[Path], bool] = lambda path: False) -> None:
    """Copy the files under `local` to `uri` (same relative paths), but the top-level `skip`
    folders and the files `unchanged` says were copied as they are already."""
    filesystem, root = open_uri(uri)
    for path in sorted(Path(local).rglob("*")):
        relative = path.relative_to(local)
        if path.is_dir() or relative.parts[0] in skip or unchanged(path):
            continue
        _upload(path, filesystem, f"{root}/{relative.as_posix()}")


def _upload(local: Path, filesystem: Any, path: str) -> None:
    from pyarrow import fs as pafs

    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=filesystem)


def download_folder(uri: str, local: Path, skip: tuple[str, ...] = ()) -> int:
    """Copy the files under `uri` into `local`, but the top-level `skip` folders; return how many."""
    from pyarrow import fs as pafs

    filesystem, root = open_uri(uri)
    if filesystem.get_file_info(root).type != pafs.FileType.Directory:
        return 0
    local_fs, copied = pafs.LocalFileSystem(), 0
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = info.path[len(root):].lstrip("/")
        if info.type != pafs.FileType.File or relative.split("/")[0] in skip:
            continue
        target = Path(local) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(info.path, str(target), source_filesystem=filesystem, destination_filesystem=local_fs)
        copied += 1
    return copied


def filesystem_for(location: str) -> tuple[Any, str]:
    """pyarrow's filesystem for `location` (a local path or a URI) and the path inside it."""
    if is_uri(location):
        return open_uri(location)
    from pyarrow import fs as pafs

    return pafs.LocalFileSystem(), Path(location).resolve().as_posix()


def list_files(folder: str, suffix: str = "", depth: int = 0) -> list[str]:
    """The files under `folder` (up to `depth` folders down) whose names end in `suffix`, as
    sorted paths relative to it; none when `folder` does not exist."""
    from pyarrow import fs as pafs

    filesystem, root = filesystem_for(folder)
    found, level = [], [root]
    for down in range(depth + 1):  # level by level: a deep folder of shards is never listed whole
        infos = [i for path in level for i in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))]
        found += [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
        level = [i.path for i in infos if i.type == pafs.FileType.Directory]
    return sorted(path[len(root):].lstrip("/") for path in found)


def is_folder(location: str) -> bool:
    """Whether `location` is a folder (on object storage: a prefix that holds something)."""
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(location)
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


def write_text(location: str, text: str) -> None:
    """Write `text` to the file at `location`: locally through a temporary file renamed into
    place, on object storage as one object; a reader never sees half of it."""
    if not is_uri(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
        return
    filesystem, path = open_uri(location)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def read_parquet(location: str, columns: Optional[list[str]] = None) -> Any:
    """The Parquet file at `location` (a local path or a URI) as an Arrow table."""
    import pyarrow.parquet as pq

    filesystem, path = filesystem_for(location)
    return pq.read_table(path, columns=columns, filesystem=filesystem)


def read_parquet_footer(location: str) -> tuple[Any, int]:
    """The schema (with its metadata) and row count of the Parquet file at `location`, from its
    footer alone: none of its data is read."""
    import pyarrow.parquet as pq

    filesystem, path = filesystem_for(location)
    with filesystem.open_input_file(path) as source:
        footer = pq.ParquetFile(source).metadata
        return footer.schema.to_arrow_schema(), footer.num_rows


def read_parquet_mapped(location: str, cache_dir: Optional[str] = None,
                        check: Optional[Callable[[Any], None]] = None) -> Any:
    """The Parquet file at `location` (a local path or a URI) as an Arrow table memory-mapped
    from this node's copy of it in Arrow's IPC format (`<cache>/mapped/`, one record batch).

    The first process of a node that asks for a version (size, modification time) of the file
    writes the copy, decoding one file at a time; the node's other processes wait for it and
    then map it too. The columns are then the page cache's, shared by the node's processes and
    paged in as rows are read, not a copy in each process's memory. `check` (raising on a bad
    table) sees the decoded table before its copy is written: once per node and version, so a
    file that fails it leaves no copy and is checked again by the next reader.
    """
    import fcntl

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    filesystem, path = filesystem_for(location)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{location}: no such file")
    version = f"{location.partition('?')[0]}|{info.size}|{info.mtime_ns}"
    name = f"{hashlib.sha256(version.encode()).hexdigest()[:24]}.arrow"
    local = Path(cache_dir or default_cache_dir()) / "mapped" / name
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not local.is_file():  # not written by the process this one waited for
                table = pq.read_table(path, filesystem=filesystem).combine_chunks()
                if check is not None:
                    check(table)
                tmp = local.with_name(f"{local.name}.{os.getpid()}.tmp")
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
                del table
                tmp.replace(local)
    mark_used(local)  # `distillery cache --prune` removes copies no run has read lately
    return pa.ipc.open_file(pa.memory_map(str(local))).read_all()  # the buffers keep the mapping open


def write_parquet(table: Any, location: str) -> None:
    import pyarrow.parquet as pq

    filesystem, path = filesystem_for(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=filesystem)


def new_attempt() -> str:
    """A fresh subfolder name for one attempt at writing the shards of a folder finished by a
    manifest (a store, a generated dataset): concurrent or interrupted attempts never mix their
    files, the manifest written last names the attempt's files, and `drop_other_attempts`
    removes what interrupted attempts left. Nothing is renamed, so it works on object storage."""
    return f"{ATTEMPT_PREFIX}{uuid.uuid4().hex[:12]}"


def drop_other_attempts(folder: str, kept: str) -> None:
    """Remove the attempt subfolders of `folder` but `kept` (interrupted earlier attempts)."""
    from pyarrow import fs as pafs

    filesystem, root = filesystem_for(folder)
    for info in filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith(ATTEMPT_PREFIX) and name != kept:
            filesystem.delete_dir(info.path)


def exists(location: str) -> bool:
    """Whether the file at `location` (a local path or a URI) exists."""
    if not is_uri(location):
        return Path(location).is_file()
    from pyarrow import fs as pafs

    filesystem, path = open_uri(location)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_text(location: str) -> str:
    if not is_uri(location):
        return Path(location).read_text()
    filesystem, path = open_uri(location)
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def put_file(local: Path, location: str) -> None:
    """Copy the file `local` to `location` (a local path: atomically, a half-written file is never seen)."""
    if not is_uri(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(local, tmp)
        tmp.replace(target)
        return
    _upload(local, *open_uri(location))


def fetch_file(location: str, cache_dir: Optional[str] = None) -> str:
    """A local path to the file at `location`: itself, or (a URI) a copy downloaded once into
    `<cache>/fetched/` (downloaded again when its size on the store changed)."""
    if not is_uri(location):
        return location
    from pyarrow import fs as pafs

    filesystem, path = open_uri(location)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{location}: no such file on the object store")
    key = hashlib.sha256(location.partition("?")[0].encode()).hexdigest()[:16]
    local = Path(cache_dir or default_cache_dir()) / "fetched" / key / path.rsplit("/", 1)[-1]
    _fetch_changed(filesystem, info, local)
    mark_used(local)
    return str(local)


def _fetch_changed(filesystem: Any, info: Any, local: Path) -> None:
    """Download the store's file `info` to `local` unless a copy of its size is there; the file
    lands whole (written aside, then renamed), so processes of one node fetching at once never
    read half a file."""
    from pyarrow import fs as pafs

    if local.is_file() and local.stat().st_size == info.size:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + f".{os.getpid()}.tmp")
    pafs.copy_files(info.path, str(tmp), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    tmp.replace(local)


def fetch_folder(location: str, cache_dir: Optional[str] = None) -> str:
    """A local path to the folder at `location`: itself, or (a URI) a copy downloaded once into
    `<cache>/fetched/` (a file whose size on the store changed is downloaded again)."""
    if not is_uri(location):
        return location
    from pyarrow import fs as pafs

    filesystem, root = open_uri(location)
    files = [info for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
             if info.type == pafs.FileType.File]
    if not files:
        raise FileNotFoundError(f"{location}: no such folder on the object store (or it holds no file)")
    key = hashlib.sha256(location.partition("?")[0].rstrip("/").encode()).hexdigest()[:16]
    local = Path(cache_dir or default_cache_dir()) / "fetched" / key / root.rstrip("/").rsplit("/", 1)[-1]
    for info in files:
        _fetch_changed(filesystem, info, local / info.path[len(root):].lstrip("/"))
    mark_used(local)
    return str(local)


def join(location: str, *parts: str) -> str:
    """`parts` under `location`, a local path or a URI."""
    return join_uri(location, *parts) if is_uri(location) else str(Path(location).joinpath(*parts))


@contextmanager
def local_folder_for(location: str) -> Iterator[Path]:
    """A local folder to write into: `location` itself, or (a URI) a temporary folder uploaded
    to it when the block ends without an error."""
    if not is_uri(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="distillery-upload-") as tmp:
        yield Path(tmp)
        upload_folder(Path(tmp), location)


class RunFolder:
    """Where one run keeps its files: `local` (the folder itself, or the driver's working copy
    of a URI) and, for a URI, `remote`."""

    def __init__(self, output_dir: str, run: str, cache_dir: str):
        self.remote: Optional[str] = join_uri(output_dir, run) if is_uri(output_dir) else None
        self._pushed: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) when last pushed
        if self.remote is None:
            self.local = Path(output_dir).resolve() / run
        else:
            self.local = Path(cache_dir) / "runs" / hashlib.sha256(output_dir.encode()).hexdigest()[:12] / run
            open_uri(self.remote)  # a bad URI fails here, before anything starts

    @property
    def location(self) -> str:
        """What the user sees: the URI, or the local folder."""
        return self.remote or str(self.local)

    def pull(self) -> int:
        """Bring the run's files from the URI into the working copy (a resumed run on a new
        driver); return how many came."""
        self.local.mkdir(parents=True, exist_ok=True)
        if self.remote is None:
            return 0
        for stale in self.local.iterdir():  # the URI's copy is the run's; an older working copy is not
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        pulled = download_folder(self.remote, self.local, skip=NOT_MIRRORED)
        for path in self.local.rglob("*"):  # what came is on the URI already: the next push skips it
            if path.is_file():
                self._pushed[path] = _stamp(path)
        for log in self.local.glob("*.jsonl"):  # pushed while being appended to: drop a line cut short
            text = log.read_bytes()
            if text and not text.endswith(b"\n"):
                log.write_bytes(text[:text.rfind(b"\n") + 1])
        return pulled

    def push(self) -> None:
        """Upload the working copy's files that changed since the last push."""
        if self.remote is None:
            return
        seen: dict[Path, tuple[int, int]] = {}

        def unchanged(path: Path) -> bool:
            seen[path] = _stamp(path)
            return self._pushed.get(path) == seen[path]

        upload_folder(self.local, self.remote, skip=NOT_MIRRORED, unchanged=unchanged)
        self._pushed.update(seen)

    @contextmanager
    def pushing(self, every_s: float = PUSH_EVERY_S) -> Iterator[None]:
        """Push every `every_s` seconds while the block runs (a driver killed mid-phase leaves
        its metrics on the URI, not only its checkpoints), and once more at its end."""
        if self.remote is None:
            yield
            return
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                try:
                    self.push()
                except Exception as exc:  # noqa: BLE001 - a store that is briefly unreachable: next time
                    logger.warning("pushing the run's files to %s failed (%s); trying again in %.0fs",
                                   self.remote, exc, every_s)

        thread = threading.Thread(target=loop, name="push-run-folder", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.push()

    def child(self, *parts: str) -> str:
        """A location inside the run (a local path or a URI) for work that writes there itself."""
        return join(self.location, *parts)

    def train_storage(self) -> dict[str, Any]:
        """Ray Train's `storage_path` (and `storage_filesystem` for a URI) for the checkpoints."""
        if self.remote is None:
            return {"storage_path": str(self.local / TRAIN_FOLDER)}
        filesystem, path = open_uri(join_uri(self.remote, TRAIN_FOLDER))
        return {"storage_path": path, "storage_filesystem": filesystem}


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a changed file: its size and modification time."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
