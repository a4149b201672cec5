"""Where files live: a local path or a URI (`s3://bucket/key`, `gs://...`, any pyarrow or fsspec
filesystem), behind one small API that the readers, checkpoints and run folders all call.

    fs, path = filesystem("s3://bucket/VOCdevkit")      # (pyarrow FileSystem, path on it)
    data = read_bytes("s3://bucket/VOCdevkit/VOC2007/JPEGImages/000005.jpg")
    check_access("s3://bucket/VOCdevkit", "data.root")  # StorageError naming the URI, before any work

A string is a URI when it starts with `<scheme>://` and the scheme is not `file`; everything else is
a local path (`file:///x` is the local `/x`). URIs go through `pyarrow.fs.FileSystem.from_uri` (S3,
GCS, HDFS) and, for schemes pyarrow does not know, through fsspec (`fsspec.filesystem(scheme)` in a
`PyFileSystem(FSSpecHandler(...))`). Credentials and settings are each store's standard ones, read
by its own client: for S3 the AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, ...),
`~/.aws`, the node's instance role, and `AWS_ENDPOINT_URL` for S3-compatible stores (MinIO, a local
test server). Only S3 and the local disk are tested here; the rest goes through the same code.

Reads of objects are retried a bounded number of times (`RETRIES`) on errors that may pass (network,
throttling, 5xx); a missing object, a missing bucket and a refused permission are not retried.
Missing buckets, missing credentials and refused permissions surface as `StorageError`, a
`UserError` naming the URI (pipelines exit 2 with one message).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = [
    "StorageError", "Entry", "is_uri", "absolute", "join", "parent", "basename", "filesystem", "exists",
    "is_file", "is_dir", "list_dir", "read_bytes", "read_text", "read_many", "write_bytes", "write_text",
    "makedirs", "open_input", "download", "upload", "check_access", "with_retries", "RETRIES",
]

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
RETRIES = 4  # attempts per read of an object, the first included
BACKOFF_S = (0.2, 0.5, 1.0)  # sleep before the 2nd, 3rd, 4th attempt
READ_THREADS = 16  # concurrent object reads in `read_many` (annotation files of a bucket dataset)

# Errors that will not pass by trying again: S3's codes as pyarrow's AWS SDK reports them, and HTTP status.
_PERMANENT = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|"
                        r"SignatureDoesNotMatch|NO_SUCH_KEY|NoSuchKey|HTTP status (400|401|403|404)|"
                        r"Forbidden|not found|does not exist", re.IGNORECASE)
_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|HTTP status 40[13]|"
                     r"Forbidden|PermissionDenied|permission denied", re.IGNORECASE)
_NO_BUCKET = re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|Bucket '[^']*' not found", re.IGNORECASE)


class StorageError(UserError, OSError):
    """A location that cannot be used: a missing bucket or prefix, no credentials, a refused permission,
    a store that cannot be reached. The message names the URI and the way out."""

    label = "storage error"


@dataclass(frozen=True)
class Entry:
    """One listed file or folder. `path` is in the caller's form (a URI under a URI, a local path
    under a local folder); `name` is relative to the listed folder (with `/` when recursive)."""

    path: str
    name: str
    size: int
    mtime_ns: int
    is_dir: bool


# ------------------------------------------------------------------------------------- naming
def scheme(path: str | os.PathLike) -> str | None:
    m = _SCHEME.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return m.group(1).lower() if m else None


def is_uri(path: str | os.PathLike | None) -> bool:
    """True for `s3://...`, `gs://...` and other `<scheme>://` locations except `file://`."""
    return path is not None and scheme(path) not in (None, "file")


def _local(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    return p[len("file://"):] if p.startswith("file://") else p


def absolute(path: str | os.PathLike) -> str:
    """A URI unchanged (without a trailing `/`); a local path expanded and made absolute, since Ray
    workers run in other directories (`file://` URIs become local paths)."""
    if is_uri(path):
        p = os.fspath(path)
        head = _SCHEME.match(p).group(0)
        return head + p[len(head):].rstrip("/")
    return str(Path(_local(path)).expanduser().resolve())


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...`: `/`-joined for URIs, `os.path.join` for local paths."""
    if is_uri(base):
        out = os.fspath(base).rstrip("/")
        for part in parts:
            out = f"{out}/{str(part).strip('/')}" if part else out
        return out
    return os.path.join(_local(base), *parts)


def parent(path: str | os.PathLike) -> str:
    if is_uri(path):
        p = os.fspath(path).rstrip("/")
        head = _SCHEME.match(p).group(0)
        rest = p[len(head):]
        return head + (rest.rsplit("/", 1)[0] if "/" in rest else rest)
    return os.path.dirname(_local(path))


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(os.fspath(path).rstrip("/")) if is_uri(path) else os.path.basename(_local(path))


# ---------------------------------------------------------------------------------- filesystems
_FS_CACHE: dict[tuple, tuple] = {}
_FS_LOCK = threading.Lock()
# Settings that change which store or identity a URI resolves to: part of the cache key, so a process
# that changes them (tests, notebooks) gets a fresh client.
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED",
             "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")


def _authority(uri: str) -> str:
    rest = uri[_SCHEME.match(uri).end():]
    return rest.split("/", 1)[0]


def _new_filesystem(uri: str):
    """(filesystem, path) for a URI: pyarrow's own filesystems first, fsspec for the other schemes."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as e:
        if "Unrecognized filesystem type" not in str(e):
            raise StorageError(f"{uri}: not a location pyarrow can open: {e}") from None
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs = fsspec.filesystem(scheme(uri))
    except (ImportError, ValueError) as e:
        raise StorageError(f"{uri}: no filesystem for the scheme {scheme(uri)!r} (pyarrow does not know it and "
                           f"fsspec has no implementation installed: {e})") from None
    return PyFileSystem(FSSpecHandler(fs)), fs._strip_protocol(uri)


def filesystem(path: str | os.PathLike):
    """`(pyarrow.fs.FileSystem, path on it)` for a local path or a URI; clients are cached per process
    and store (scheme + bucket), so every read of a bucket reuses one connection pool."""
    from pyarrow import fs as pafs

    if not is_uri(path):
        return pafs.LocalFileSystem(), absolute(path)
    uri = absolute(path)
    key = (scheme(uri), _authority(uri), tuple(os.environ.get(k) for k in _ENV_KEYS))
    with _FS_LOCK:
        cached = _FS_CACHE.get(key)
    if cached is None:
        fs, root_path = _new_filesystem(f"{scheme(uri)}://{_authority(uri)}")
        cached = (fs, root_path.rstrip("/"))
        with _FS_LOCK:
            _FS_CACHE[key] = cached
    fs, root_path = cached
    rest = uri[_SCHEME.match(uri).end() + len(_authority(uri)):].strip("/")
    return fs, f"{root_path}/{rest}" if rest else root_path


# --------------------------------------------------------------------------------------- retries
def transient(e: BaseException) -> bool:
    """Might the same call succeed later? Network errors, throttling and 5xx: yes; missing objects or
    buckets and refused permissions: no."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, StorageError)):
        return False
    return isinstance(e, OSError) and not _PERMANENT.search(str(e))


def with_retries(fn, what: str, attempts: int = RETRIES):
    """`fn()`, tried up to `attempts` times while it fails with a transient error (logged), with a short
    growing pause between tries; the last error is raised."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below
            if attempt == attempts - 1 or not transient(e):
                raise
            pause = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            log.warning("reading %s failed (%s); trying again in %.1f s (%d/%d)", what, e, pause, attempt + 2, attempts)
            time.sleep(pause)
    raise AssertionError("unreachable")


def _explain(e: BaseException, path: str, what: str | None = None) -> BaseException:
    """A permanent store error as a StorageError naming `path`; other errors unchanged."""
    if not is_uri(path) or isinstance(e, (StorageError, FileNotFoundError)) or not isinstance(e, OSError):
        return e
    label = f"{what} {path}" if what else path
    if _NO_BUCKET.search(str(e)):
        return StorageError(f"{label}: the bucket {_authority(path)!r} does not exist{_endpoint_note()}")
    if _DENIED.search(str(e)):
        return StorageError(f"{label}: access denied with the credentials in use ({_credentials_source()}): "
                            f"they need permission to list and read it (S3: s3:ListBucket, s3:GetObject; "
                            f"s3:PutObject where runs are written). Store message: {e}")
    return e


# -------------------------------------------------------------------------------- file operations
def info(path: str | os.PathLike):
    fs, p = filesystem(path)
    try:
        return with_retries(lambda: fs.get_file_info(p), str(path))
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(path)) from None


def exists(path: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    return info(path).type != pafs.FileType.NotFound


def is_file(path: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    return info(path).type == pafs.FileType.File


def is_dir(path: str | os.PathLike) -> bool:
    from pyarrow import fs as pafs

    return info(path).type == pafs.FileType.Directory


def list_dir(path: str | os.PathLike, recursive: bool = False) -> list[Entry]:
    """Files and folders in `path` (sorted by name); FileNotFoundError when it is not a folder. One
    listing request per 1000 objects on S3, instead of a request per file."""
    from pyarrow import fs as pafs

    fs, p = filesystem(path)
    base = os.fspath(path).rstrip("/") if is_uri(path) else _local(path)  # entries in the caller's form
    try:
        infos = with_retries(lambda: fs.get_file_info(pafs.FileSelector(p, recursive=recursive)), str(path))
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(path)) from None
    prefix = p.rstrip("/") + "/"
    out = []
    for i in infos:
        name = i.path[len(prefix):] if i.path.startswith(prefix) else posixpath.basename(i.path)
        mtime = i.mtime_ns if i.mtime_ns is not None else 0
        out.append(Entry(join(base, *name.split("/")), name, int(i.size or 0), int(mtime),
                         i.type == pafs.FileType.Directory))
    return sorted(out, key=lambda e: e.name)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; transient errors retried (`RETRIES`). FileNotFoundError for a missing object,
    StorageError for a missing bucket or a refused read."""
    if not is_uri(path):
        with open(_local(path), "rb") as f:
            return f.read()
    fs, p = filesystem(path)

    def read() -> bytes:
        with fs.open_input_stream(p) as f:
            return f.read()

    try:
        return with_retries(read, str(path))
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(path)) from None


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def read_many(paths: Iterable[str], threads: int = READ_THREADS) -> Iterator[tuple[str, bytes | BaseException]]:
    """`(path, bytes or the error)` for each path, in order. Objects are fetched `threads` at a time
    (per-object latency, not bandwidth, is what a bucket of small annotation files costs); local
    files are read one by one as they are consumed."""
    paths = list(paths)
    if not any(is_uri(p) for p in paths):
        for p in paths:
            try:
                yield p, read_bytes(p)
            except OSError as e:
                yield p, e
        return

    def fetch(p: str):
        try:
            return read_bytes(p)
        except Exception as e:  # noqa: BLE001 - handed to the caller, which counts or raises it
            return e

    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        # A window of futures, so a 100k-object read holds only `4 * threads` results at a time.
        window = 4 * threads
        pending: list[concurrent.futures.Future] = []
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(fetch, p))
            if len(pending) >= window:
                break
        done = 0
        while pending:
            fut = pending.pop(0)
            yield paths[done], fut.result()
            done += 1
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fetch, nxt))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file. Local: into a temporary file then renamed (a crash never leaves half a
    file where a good one was); object stores: one upload, which is atomic by itself."""
    if not is_uri(path):
        p = Path(_local(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # writers never share one
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return
    fs, p = filesystem(path)
    try:
        with fs.open_output_stream(p) as f:
            f.write(data)
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(path)) from None


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def makedirs(path: str | os.PathLike) -> None:
    """Create a local folder; object stores have no folders (prefixes exist once an object is written)."""
    if not is_uri(path):
        Path(_local(path)).mkdir(parents=True, exist_ok=True)


def remove_dir(path: str | os.PathLike) -> None:
    """Delete a folder (an object store: every object under the prefix) and all it holds; a missing
    one is not an error."""
    if not is_uri(path):
        shutil.rmtree(_local(path), ignore_errors=True)
        return
    fs, p = filesystem(path)
    try:
        fs.delete_dir(p)
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(path)) from None


@contextlib.contextmanager
def open_input(path: str | os.PathLike):
    """A seekable binary file object (PIL and json can read it); a URI is read into memory first."""
    if not is_uri(path):
        with open(_local(path), "rb") as f:
            yield f
    else:
        yield io.BytesIO(read_bytes(path))


def download(src: str | os.PathLike, local_dst: str | os.PathLike) -> None:
    """Copy a file or a whole folder from any location to the local disk."""
    from pyarrow import fs as pafs

    fs, p = filesystem(src)
    dst = absolute(local_dst)
    try:
        if fs.get_file_info(p).type == pafs.FileType.Directory:
            Path(dst).mkdir(parents=True, exist_ok=True)
        else:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(p, dst, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(src)) from None


def upload(local_src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a local file or folder to any location (a URI, or another local path)."""
    from pyarrow import fs as pafs

    fs, p = filesystem(dst)
    src = absolute(local_src)
    try:
        if not is_uri(dst):
            Path(p if os.path.isdir(src) else os.path.dirname(p)).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(src, p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except Exception as e:  # noqa: BLE001
        raise _explain(e, str(dst)) from None


@contextlib.contextmanager
def local_copy(path: str | os.PathLike, suffix: str = ""):
    """A local path holding the file's bytes: the path itself when local, else a temporary copy."""
    if not is_uri(path):
        yield _local(path)
        return
    with tempfile.TemporaryDirectory(prefix="ssd_ray_") as d:
        local = os.path.join(d, basename(path) + suffix)
        with open(local, "wb") as f:
            f.write(read_bytes(path))
        yield local


# ------------------------------------------------------------------------------- access checks
def _endpoint_note() -> str:
    ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return f" at {ep} (AWS_ENDPOINT_URL)" if ep else ""


def _botocore_credentials():
    """botocore's default chain (env, profile, ~/.aws, container and instance roles), without its INFO
    line ("Found credentials in environment variables") on every run's console."""
    import botocore.session

    quiet = logging.getLogger("botocore.credentials")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return botocore.session.get_session().get_credentials()
    finally:
        quiet.setLevel(level)


def _credentials_source() -> str:
    """Where the AWS credentials in use come from, as botocore's chain finds them."""
    try:
        creds = _botocore_credentials()
    except ImportError:
        return "AWS default chain"
    except Exception as e:  # noqa: BLE001 - a broken profile file: say so
        return f"AWS default chain: {e}"
    return f"AWS {creds.method}" if creds is not None else "none found"


def s3_credentials_problem() -> str | None:
    """Why no AWS credentials are available, or None when the default chain finds some (or when
    botocore, from the `s3` extra, is not installed to ask it)."""
    try:
        creds = _botocore_credentials()
    except ImportError:
        return None
    except Exception as e:  # noqa: BLE001
        return f"reading the AWS configuration failed: {e}"
    if creds is None:
        return ("no AWS credentials found (looked for AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
                "~/.aws/credentials, and the node's instance role"
                + (", which AWS_EC2_METADATA_DISABLED turns off" if os.environ.get("AWS_EC2_METADATA_DISABLED",
                                                                                  "").lower() == "true" else "")
                + "). Set them, or run on nodes with an IAM instance profile (docs/cluster.md)")
    return None


def check_access(path: str | os.PathLike, what: str, must_exist: bool = True) -> None:
    """Raise one StorageError naming `what` and the URI when it cannot be used: no credentials (S3), a
    missing bucket, a refused listing, or (with `must_exist`) nothing under the prefix. Other stores
    get the same bucket and listing checks (no credentials check); local paths are left to the
    readers, whose errors name the folder. Costs two or three requests."""
    from pyarrow import fs as pafs

    if not is_uri(path):
        return
    uri = absolute(path)
    if scheme(uri) in ("s3", "s3a"):
        problem = s3_credentials_problem()
        if problem:
            raise StorageError(f"{what} {uri}: {problem}")
    fs, p = filesystem(uri)
    bucket = p.split("/", 1)[0]
    try:
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageError(f"{what} {uri}: the bucket {bucket!r} does not exist{_endpoint_note()}")
        # A listing proves the credentials may read here (a HEAD alone may pass on a public bucket).
        listing = with_retries(lambda: fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)), uri)
        kind = fs.get_file_info(p).type if not listing else pafs.FileType.Directory
    except StorageError:
        raise
    except Exception as e:  # noqa: BLE001
        err = _explain(e, uri, what)
        if isinstance(err, StorageError):
            raise err from None
        raise StorageError(f"{what} {uri}: the store cannot be reached{_endpoint_note()}: {e}") from None
    if must_exist and kind == pafs.FileType.NotFound:
        raise StorageError(f"{what} {uri}: nothing there (no object under this prefix in bucket {bucket!r})")
