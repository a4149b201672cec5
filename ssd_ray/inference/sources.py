"""What to predict: `--images SRC` -> a sorted list of image files on a (pyarrow) filesystem.

SRC is an image file, a folder (its subfolders too with `recursive`), or a text file (`.txt`,
`.lst`) listing one path per line (`#` comments and blank lines ignored; relative entries are
relative to the list's folder). Files are told apart by suffix: those without an image suffix are
left out and counted (`NOT_AN_IMAGE`); image-suffixed files that fail to decode are found later, by
the readers. Every path lives on a `pyarrow.fs.FileSystem` (`source_filesystem`), which the read
tasks receive too: local disk today; an object-store prefix (`pyarrow.fs.S3FileSystem`, or any
fsspec filesystem through `pyarrow.fs.PyFileSystem(FSSpecHandler(fs))`) slots in there.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
LIST_SUFFIXES = (".lst", ".txt")
NOT_AN_IMAGE = "not an image (suffix)"  # the report's reason for files left out by suffix


class SourceError(ValueError):
    """SRC cannot be listed (missing, unsupported) or holds no image: the message names it."""


@dataclass
class ImageListing:
    """The images of one source, sorted and unique, with their output names.

    paths: filesystem paths (absolute for local disk); keys: per image a relative name without suffix,
    unique within the listing (`sub/a`; `a_jpg` / `a_png` when `a.jpg` and `a.png` sit together),
    which the per-image output uses; not_images: files left out by suffix, counted per suffix ("" = none).
    """

    source: str
    filesystem: object  # pyarrow.fs.FileSystem (pickled into the read tasks)
    paths: list[str]
    keys: list[str]
    root: str  # folder the keys are relative to
    not_images: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, keep) -> "ImageListing":
        """The listing restricted to the positions where `keep` (bool per image) is true."""
        paths = [p for p, k in zip(self.paths, keep) if k]
        keys = [k for k, kk in zip(self.keys, keep) if kk]
        return ImageListing(self.source, self.filesystem, paths, keys, self.root, Counter(self.not_images))


def source_filesystem(source: str):
    """(pyarrow filesystem, path on it) of SRC. The one place that decides where images live."""
    from pyarrow import fs as pafs

    if "://" in source and not source.startswith("file://"):
        raise SourceError(f"--images {source}: bucket and URL sources are not supported yet; give a local file, "
                          f"folder or list of paths")
    path = source[len("file://"):] if source.startswith("file://") else source
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def _suffix(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[1].lower()


def _read_list(filesystem, list_path: str) -> list[str]:
    with filesystem.open_input_stream(list_path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"--images {list_path}: a list of paths must be UTF-8 text ({e})") from None
    base = posixpath.dirname(list_path)
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "://" in line:
            raise SourceError(f"--images {list_path}: entry {line!r} is a URL; lists hold file paths for now")
        entries.append(posixpath.normpath(line if posixpath.isabs(line) else posixpath.join(base, line)))
    return entries


def output_keys(paths: list[str], root: str) -> list[str]:
    """Per path its name relative to `root` without suffix; paths sharing one (a.jpg, a.png) get the
    suffix appended (`a_jpg`, `a_png`) so their outputs stay apart."""
    stems = [posixpath.splitext(posixpath.relpath(p, root))[0] for p in paths]
    seen = Counter(stems)
    return [f"{s}_{_suffix(p).lstrip('.')}" if seen[s] > 1 else s for s, p in zip(stems, paths)]


def list_images(source: str, recursive: bool = False) -> ImageListing:
    """List SRC (see the module docstring). SourceError when it is missing, of an unknown kind, or
    holds no image file (the message says what it held instead)."""
    from pyarrow import fs as pafs

    filesystem, path = source_filesystem(str(source))
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"--images {source}: no such file or folder")
    if info.type == pafs.FileType.Directory:
        entries = [i.path for i in filesystem.get_file_info(pafs.FileSelector(path, recursive=recursive))
                   if i.type == pafs.FileType.File]
        root = path
    elif _suffix(path) in LIST_SUFFIXES:
        entries = _read_list(filesystem, path)
        parents = sorted({posixpath.dirname(e) for e in entries})
        root = posixpath.commonpath(parents) if parents else posixpath.dirname(path)
    elif _suffix(path) in IMAGE_SUFFIXES:
        entries, root = [path], posixpath.dirname(path)
    else:
        raise SourceError(f"--images {source}: neither an image ({', '.join(IMAGE_SUFFIXES)}), a folder, nor a "
                          f"list of paths ({', '.join(LIST_SUFFIXES)})")
    paths = sorted({e for e in entries if _suffix(e) in IMAGE_SUFFIXES})
    not_images = Counter(_suffix(e) for e in entries if _suffix(e) not in IMAGE_SUFFIXES)
    if not paths:
        held = (f"{sum(not_images.values())} file(s) left out as {NOT_AN_IMAGE}: "
                + ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(not_images.items()))) if not_images else "nothing"
        raise SourceError(f"--images {source}: no image to predict ({held})")
    return ImageListing(str(source), filesystem, paths, output_keys(paths, root), root, not_images)
