"""Where a source's files are: the pyarrow filesystem of a path or URI, the files a path or
glob names, and the `DataError` every problem with a user's data becomes."""

from __future__ import annotations

import fnmatch
import glob as globbing
from pathlib import Path

import pyarrow as pa

from cluster import DistilleryError

GLOB_CHARS = "*?["


class DataError(DistilleryError, ValueError):
    """The data of `data.source` cannot be used; the message says where and what to do."""


def filesystem_of(path: str):
    """The pyarrow filesystem of a local path or a URI, and the path as it names it."""
    from pyarrow import fs

    if "://" not in path:
        return fs.LocalFileSystem(), path
    try:
        return fs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise DataError(f"{path}: pyarrow cannot open this URI ({exc}); install the filesystem it needs or "
                        f"check the address") from None


def source_files(path: str) -> tuple[object, list[str]]:
    """The filesystem and the sorted files a path or glob names; a `DataError` when none."""
    filesystem, infos = source_file_infos(path)
    return filesystem, [info.path for info in infos]


def source_file_infos(path: str) -> tuple[object, list]:
    """The filesystem and the `FileInfo` (path, size, modification time) of each file a path
    or glob names, sorted by path; a `DataError` when none."""
    filesystem, root = filesystem_of(path)
    if "://" not in path:
        candidates = sorted(globbing.glob(path)) if any(c in path for c in GLOB_CHARS) else [path]
        infos = filesystem.get_file_info([f for f in candidates if Path(f).is_file()])
    else:
        try:
            infos = _remote_files(filesystem, root)
        except OSError as exc:
            raise DataError(f"{path}: cannot list it ({exc}); check the address, the credentials and that the "
                            f"store is reachable") from None
    if not infos:
        raise DataError(f"{path}: no file matches (a missing file, or an empty glob); check data.source")
    return filesystem, infos


def _remote_files(filesystem, root: str) -> list:
    from pyarrow import fs

    if not any(c in root for c in GLOB_CHARS):
        info = filesystem.get_file_info(root)
        return [info] if info.type == fs.FileType.File else []
    folder = root[:min(root.find(c) for c in GLOB_CHARS if c in root)].rsplit("/", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(folder, recursive=True, allow_not_found=True))
    return sorted((i for i in infos if i.type == fs.FileType.File and fnmatch.fnmatch(i.path, root)),
                  key=lambda i: i.path)
