"""What to predict: `--images SRC` -> a sorted list of image files, local or in a bucket.

SRC is an image file, a folder (its subfolders too with `recursive`), a text file (`.txt`, `.lst`)
listing one path per line (`#` comments and blank lines ignored; relative entries are relative to
the list's folder), or any of these in object storage (`s3://bucket/prefix`, see `ssd_ray.storage`,
which does every listing and read here, with its retries and its errors naming the URI). Paths stay
in the caller's form: absolute local paths, or URIs for a bucket source, so results name the object
a user can open. Files are told apart by suffix: those without an image suffix are left out and
counted (`NOT_AN_IMAGE`); image-suffixed files that fail to decode are found later, by the readers.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from dataclasses import dataclass, field

from ssd_ray import storage

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
LIST_SUFFIXES = (".lst", ".txt")
NOT_AN_IMAGE = "not an image (suffix)"  # the report's reason for files left out by suffix


class SourceError(ValueError):
    """SRC cannot be listed (missing, unsupported) or holds no image: the message names it."""


@dataclass
class ImageListing:
    """The images of one source, sorted and unique, with their output names.

    paths: absolute local paths or URIs; keys: per image a relative name without suffix, unique
    within the listing (`sub/a`; `a_jpg` / `a_png` when `a.jpg` and `a.png` sit together), which the
    per-image output uses; root: the folder (or prefix) the keys are relative to; not_images: files
    left out by suffix, counted per suffix ("" = none).
    """

    source: str
    paths: list[str]
    keys: list[str]
    root: str
    not_images: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def in_bucket(self) -> bool:
        return storage.is_uri(self.root)

    def select(self, keep) -> "ImageListing":
        """The listing restricted to the positions where `keep` (bool per image) is true."""
        paths = [p for p, k in zip(self.paths, keep) if k]
        keys = [k for k, kk in zip(self.keys, keep) if kk]
        return ImageListing(self.source, paths, keys, self.root, Counter(self.not_images))


def _suffix(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[1].lower()


def _split(path: str) -> tuple[str, str]:
    """("s3://", "bucket/a/b") for a URI, ("", "/a/b") for a local path: the part that `/`-path rules apply to."""
    if storage.is_uri(path):
        head = f"{storage.scheme(path)}://"
        return head, path[len(head):]
    return "", path


def _normpath(path: str) -> str:
    head, rest = _split(path)
    return head + posixpath.normpath(rest)


def _relative(path: str, root: str) -> str:
    return posixpath.relpath(_split(path)[1], _split(root)[1])


def _read_list(list_path: str) -> list[str]:
    raw = storage.read_bytes(list_path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"--images {list_path}: a list of paths must be UTF-8 text ({e})") from None
    base = storage.parent(list_path)
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if storage.is_uri(line) or posixpath.isabs(line):
            entries.append(_normpath(storage.absolute(line)))
        else:
            entries.append(_normpath(storage.join(base, line)))
    return entries


def _common_parent(entries: list[str], fallback: str) -> str:
    parents = sorted({storage.parent(e) for e in entries})
    heads = {_split(p)[0] for p in parents}
    if not parents or len(heads) > 1:  # a list mixing local files and URIs: keys relative to nothing shared
        return fallback
    head = heads.pop()
    return head + posixpath.commonpath([_split(p)[1] for p in parents])


def output_keys(paths: list[str], root: str) -> list[str]:
    """Per path its name relative to `root` without suffix; paths sharing one (a.jpg, a.png) get the
    suffix appended (`a_jpg`, `a_png`) so their outputs stay apart."""
    stems = [posixpath.splitext(_relative(p, root))[0] for p in paths]
    seen = Counter(stems)
    return [f"{s}_{_suffix(p).lstrip('.')}" if seen[s] > 1 else s for s, p in zip(stems, paths)]


def _kind(source: str) -> str:
    """"dir", "file" or "missing"; StorageError (naming SRC) for a missing bucket or refused access."""
    from pyarrow import fs as pafs

    kind = storage.info(source).type
    return {pafs.FileType.Directory: "dir", pafs.FileType.File: "file"}.get(kind, "missing")


def list_images(source: str, recursive: bool = False) -> ImageListing:
    """List SRC (see the module docstring). SourceError when it is missing, of an unknown kind, or
    holds no image file (the message says what it held instead); StorageError for bucket access."""
    path = storage.absolute(str(source))
    kind = _kind(path)
    if kind == "missing":
        raise SourceError(f"--images {source}: no such file or folder")
    if kind == "dir":
        entries = [e.path for e in storage.list_dir(path, recursive=recursive) if not e.is_dir]
        root = path
    elif _suffix(path) in LIST_SUFFIXES:
        entries = _read_list(path)
        root = _common_parent(entries, storage.parent(path))
    elif _suffix(path) in IMAGE_SUFFIXES:
        entries, root = [path], storage.parent(path)
    else:
        raise SourceError(f"--images {source}: neither an image ({', '.join(IMAGE_SUFFIXES)}), a folder, nor a "
                          f"list of paths ({', '.join(LIST_SUFFIXES)})")
    paths = sorted({e for e in entries if _suffix(e) in IMAGE_SUFFIXES})
    not_images = Counter(_suffix(e) for e in entries if _suffix(e) not in IMAGE_SUFFIXES)
    if not paths:
        held = (f"{sum(not_images.values())} file(s) left out as {NOT_AN_IMAGE}: "
                + ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(not_images.items()))) if not_images else "nothing"
        raise SourceError(f"--images {source}: no image to predict ({held})")
    return ImageListing(str(source), paths, output_keys(paths, root), root, not_images)
