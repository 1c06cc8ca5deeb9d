"""Fingerprints of a COCO directory and of source code: what the pipeline cache keys on.

TFX reuses an execution whose inputs and properties repeat. A component that reads
files by *path* must therefore put something into its properties that changes with
the files, as TFX's own file-based ExampleGen driver does with `input_fingerprint`.

- `input_fingerprint(coco_dir)`: every file under the directory (images, annotations,
  anything else), each by relative path and size; annotation files (`*.json`) also by
  the SHA-256 of their content (an edit that keeps size and mtime still counts), every
  other file by its modification time. One listing plus one stat per file, through
  `tf.io.gfile`, so `gs://` works (stats run in a thread pool: there they are requests).
- `code_fingerprint(modules)`: SHA-256 over the content of the modules' `.py` files.

Both return a `Fingerprint` whose `str` is what goes into MLMD:
`"<files> files, <bytes> bytes, sha256:<hex>"`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from concurrent import futures
from typing import Callable, Iterable, List, Sequence, Tuple

import tensorflow as tf

_SKIP_DIRS = ("__pycache__",)
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    num_files: int
    num_bytes: int
    sha256: str

    def __str__(self) -> str:
        return f"{self.num_files} files, {self.num_bytes} bytes, sha256:{self.sha256}"


def list_files(root: str) -> List[str]:
    """Every file under `root`, as sorted paths relative to it (`__pycache__` skipped)."""
    if not tf.io.gfile.isdir(root):
        raise FileNotFoundError(f"{root} is not a directory")
    found = []
    for dirpath, dirnames, filenames in tf.io.gfile.walk(root):
        dirnames[:] = [d for d in dirnames if d.rstrip("/") not in _SKIP_DIRS]
        rel_dir = os.path.relpath(dirpath.rstrip("/"), root.rstrip("/"))
        for name in filenames:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(found)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(root: str, rel: str, by_content: bool) -> Tuple[str, int]:
    """(`rel size content-hash-or-mtime`, size) for one file."""
    path = os.path.join(root, rel)
    stat = tf.io.gfile.stat(path)
    detail = f"sha256:{file_sha256(path)}" if by_content else f"mtime:{stat.mtime_nsec}"
    return f"{rel} {stat.length} {detail}", stat.length


def _combine(entries: Iterable[Tuple[str, int]]) -> Fingerprint:
    digest, files, size = hashlib.sha256(), 0, 0
    for line, length in entries:
        digest.update(line.encode("utf-8") + b"\n")
        files += 1
        size += length
    return Fingerprint(files, size, digest.hexdigest())


def tree_fingerprint(root: str, by_content: Callable[[str], bool], workers: int = 0) -> Fingerprint:
    """Fingerprint of every file under `root`; `by_content(rel_path)` picks content hashing.

    `workers`: concurrent stats (0: 64 for remote paths such as gs://, where each is a
    request; local stats run in this thread, where threads only slow them down).
    """
    files = list_files(root)
    workers = workers or (64 if "://" in root else 1)
    one = lambda rel: _entry(root, rel, by_content(rel))  # noqa: E731
    if workers == 1:
        return _combine(map(one, files))
    with futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return _combine(pool.map(one, files))


def input_fingerprint(coco_dir: str) -> Fingerprint:
    """A COCO directory's fingerprint: annotations by content, other files by size and mtime."""
    return tree_fingerprint(coco_dir, lambda rel: rel.endswith(".json"))


def _module_files(name: str) -> List[Tuple[str, str]]:
    """[(label, path)] of a module's file or a package's `.py` files (not imported)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"no module named {name!r}")
    if spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        return [(f"{name}/{rel}", os.path.join(root, rel)) for rel in list_files(root) if rel.endswith(".py")]
    return [(name, spec.origin)]


def code_fingerprint(modules: Sequence[str]) -> Fingerprint:
    """Fingerprint of the source of `modules` (package names or module names)."""
    files = sorted({label: path for name in modules for label, path in _module_files(name)}.items())
    return _combine((f"{label} sha256:{file_sha256(path)}", os.path.getsize(path)) for label, path in files)
