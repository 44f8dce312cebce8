"""Image folders (`data.source.format: images`): one sub-folder per class, each image decoded,
resized and normalised as `data.source.image` says, and flattened channel-first into the
fixed-length float vector every classification model of the zoo reads.

A folder's rows are a table of `image` (the file's bytes), `label` (the class folder's index)
and `id` (the path under the split's folder: `class/name.png`, stable however the files are
listed); the same table comes from a local folder, an object store, or a streamed block of
`ray.data.read_binary_files`, and `ingest.file_data` turns it into a split.
"""

from __future__ import annotations

import io
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from ingest.config import ImageConfig, SourceConfig
from ingest.source_paths import DataError, filesystem_of

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def image_files(root: str) -> tuple[object, str, list[str]]:
    """The filesystem, the folder as that filesystem names it, and the image files under it
    (sorted; files of other kinds are not images and are left out)."""
    from pyarrow import fs

    filesystem, folder = filesystem_of(root)
    folder = folder.rstrip("/")
    try:
        infos = filesystem.get_file_info(fs.FileSelector(folder, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise DataError(f"{root}: cannot list it ({exc}); check the address, the credentials and that the store "
                        f"is reachable") from None
    files = sorted(i.path for i in infos if i.type == fs.FileType.File and i.path.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders (a missing "
                        f"or empty folder); an image source is a folder with one sub-folder per class")
    return filesystem, folder, files


def relative_path(path: str, folder: str) -> str:
    """`class/name.png`: a file's path under its split's folder."""
    at = path.find(folder)
    return path[at + len(folder):].lstrip("/") if at >= 0 else path


def image_classes(source: SourceConfig) -> list[str]:
    """The class folders in label order: `data.source.classes`, or the train folder's
    sub-folders sorted by name."""
    if source.classes is not None:
        return list(source.classes)
    _, folder, files = image_files(source.train)
    return sorted({class_of(relative_path(f, folder), source.train) for f in files})


def class_of(relative: str, root: str) -> str:
    if "/" not in relative:
        raise DataError(f"{root}/{relative}: an image outside any class folder; put every image in the sub-folder "
                        f"named after its class")
    return relative.split("/", 1)[0]


def folder_table(paths: list[str], images: list[bytes], folder: str, root: str, classes: list[str]) -> pa.Table:
    """The rows of images read from `paths` under `folder` (`root` as the config gives it)."""
    index = {name: i for i, name in enumerate(classes)}
    ids = [relative_path(p, folder) for p in paths]
    labels = []
    for relative in ids:
        name = class_of(relative, root)
        if name not in index:
            raise DataError(f"{root}/{name}: a class folder the train split does not have (its classes: "
                            f"{classes}); the teachers could never learn it. Move its images, or list every class "
                            f"in data.source.classes")
        labels.append(index[name])
    return pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.int64()),
                     "id": pa.array(ids, pa.string())})


def read_image_folder(root: str, source: SourceConfig,
                      keep: Optional[Callable[[list[str]], np.ndarray]] = None) -> tuple[pa.Table, list[str]]:
    """The images of a split's folder as a table, and the files read; `keep(ids)` chooses
    which files to read (all when None)."""
    tables, files = [], []
    for table, chunk in image_chunks(root, source, keep=keep, rows=None):
        tables.append(table)
        files += chunk
    return pa.concat_tables(tables), files


def image_chunks(root: str, source: SourceConfig, *, keep: Optional[Callable[[list[str]], np.ndarray]] = None,
                 rows: Optional[int] = 1024):
    """(table, files) of at most `rows` images at a time (all at once when None), so that a
    folder larger than memory can be checked."""
    filesystem, folder, files = image_files(root)
    classes = image_classes(source)
    if keep is not None:
        files = [f for f, kept in zip(files, keep([relative_path(f, folder) for f in files])) if kept]
    step = rows or max(len(files), 1)
    for start in range(0, max(len(files), 1), step):  # an empty selection is one empty table
        chunk = files[start:start + step]
        images = []
        for path in chunk:
            try:
                with filesystem.open_input_stream(path) as stream:
                    images.append(stream.read())
            except OSError as exc:
                raise DataError(f"{path}: cannot read it ({exc})") from None
        yield folder_table(chunk, images, folder, root, classes), chunk


def decode_images(images: pa.Array, spec: ImageConfig, where: Callable[[int], str]) -> np.ndarray:
    """float32 [N, channels * height * width]: each image decoded, converted to the configured
    channels, resized, scaled to [0, 1] and normalised by the configured mean and std."""
    from PIL import Image

    height, width = spec.shape
    out = np.empty((len(images), height, width, spec.channels), np.float32)
    mode = "L" if spec.channels == 1 else "RGB"
    for row, data in enumerate(images.to_pylist()):
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad file; each means unreadable
            raise DataError(f"{where(row)}: not a readable image ({type(exc).__name__}: {exc}); replace or remove "
                            f"the file") from None
        out[row] = np.asarray(pixels, np.float32).reshape(height, width, spec.channels)
    out /= 255.0
    out -= np.asarray(spec.mean, np.float32)
    out /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)).reshape(len(images), -1)


def stream_table(batch: pa.Table, source: SourceConfig, root: str) -> pa.Table:
    """A block of `ray.data.read_binary_files(..., include_paths=True)` as a folder's rows."""
    _, folder = filesystem_of(root)
    return folder_table(batch.column("path").to_pylist(), batch.column("bytes").to_pylist(), folder.rstrip("/"),
                        root, image_classes(source))
