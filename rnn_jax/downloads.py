"""Corpora fetched once from their canonical addresses into a cache, each file verified before it is used.

| source | address | verified by |
|---|---|---|
| `download_ptb` | Mikolov's `simple-examples.tgz` (its `data/ptb.*.txt`) | size and MD5 of each file |
| `download_tinyshakespeare` | Karpathy's char-rnn `tinyshakespeare/input.txt` | size and SHA-256 |

The cache is `$RNN_JAX_CACHE` or `~/.cache/rnn_jax`. A cached file is re-verified on every use and refetched when
damaged; a download is written to a temporary file beside its target and moved into place only once verified, so
nothing partial is ever left. Any scheme `urllib` opens works (`file://` too, which is how the tests run offline).

Examples:
    >>> from rnn_jax.downloads import TINYSHAKESPEARE
    >>> TINYSHAKESPEARE.size
    1115394
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import tarfile
import tempfile
import urllib.request
from typing import NamedTuple

from rnn_jax.errors import DataError


class RemoteFile(NamedTuple):
    """A file at `url` with its size in bytes and its digest (`algorithm` as hashlib names it)."""

    url: str
    size: int
    digest: str
    algorithm: str = "sha256"


TINYSHAKESPEARE = RemoteFile(
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt", 1_115_394,
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = {  # name in the archive's data/ folder: (size in bytes, md5)
    "ptb.train.txt": (5_101_618, "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
    "ptb.valid.txt": (399_782, "aa0affc06ff7c36e977d7cd49e3839bf"),
    "ptb.test.txt": (449_945, "8b80168b89c18661a38ef683c0dc3721"),
}


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("RNN_JAX_CACHE", pathlib.Path.home() / ".cache" / "rnn_jax"))


def verify(name: str, data: bytes, size: int, digest: str, origin: str, algorithm: str = "md5") -> None:
    """A DataError unless `data` has `size` bytes and the given digest."""
    if len(data) != size:
        raise DataError(f"{origin}: {name} has {len(data)} bytes, expected {size}")
    found = hashlib.new(algorithm, data).hexdigest()
    if found != digest:
        raise DataError(f"{origin}: {name} has {algorithm} {found}, expected {digest}")


def _fetch(url: str, what: str, timeout: float, offline_hint: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError as e:
        raise DataError(f"could not download {what} from {url}: {e}. {offline_hint}") from None


def _write_atomically(target: pathlib.Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=f".{target.name}.") as tmp:
        tmp.write(data)
    os.replace(tmp.name, target)


def _cached(path: pathlib.Path, size: int, digest: str, algorithm: str) -> bool:
    try:
        verify(path.name, path.read_bytes(), size, digest, str(path.parent), algorithm)
        return True
    except (OSError, DataError):
        return False


def download_tinyshakespeare(cache_dir: str | os.PathLike | None = None, *, remote: RemoteFile = TINYSHAKESPEARE,
                             timeout: float = 60.0) -> pathlib.Path:
    """The path of Tiny Shakespeare's `input.txt` in `cache_dir/tinyshakespeare`, downloaded and verified once.

    Without internet, pass a local copy as the corpus source instead (`--data-source path/to/input.txt`).
    """
    target = pathlib.Path(cache_dir or default_cache_dir()) / "tinyshakespeare" / "input.txt"
    if _cached(target, remote.size, remote.digest, remote.algorithm):
        return target
    data = _fetch(remote.url, "Tiny Shakespeare", timeout, "Without internet, download input.txt elsewhere and "
                  "pass its path as the corpus source (--data-source PATH).")
    verify(target.name, data, remote.size, remote.digest, remote.url, remote.algorithm)
    _write_atomically(target, data)
    return target


def download_ptb(cache_dir: str | os.PathLike | None = None, *, url: str = PTB_URL,
                 files: dict[str, tuple[int, str]] = PTB_FILES, timeout: float = 60.0) -> pathlib.Path:
    """The PTB files in `cache_dir/ptb`, downloading and verifying them (size and MD5) on first use.

    Returns:
        The directory holding ptb.train.txt, ptb.valid.txt, ptb.test.txt.
    """
    target = pathlib.Path(cache_dir or default_cache_dir()) / "ptb"
    if all(_cached(target / name, size, md5, "md5") for name, (size, md5) in files.items()):
        return target
    archive = _fetch(url, "the PTB archive", timeout, "Without internet, download simple-examples.tgz elsewhere "
                     "and pass its data/ directory as the corpus source.")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:*")
    except tarfile.TarError as e:
        raise DataError(f"{url}: not a tar archive ({e})") from None
    members = {pathlib.PurePosixPath(m.name).name: m for m in tar.getmembers()
               if m.isfile() and pathlib.PurePosixPath(m.name).parent.name == "data"}
    for name, (size, md5) in files.items():
        if name not in members:
            raise DataError(f"{url}: the archive has no data/{name}")
        data = tar.extractfile(members[name]).read()
        verify(name, data, size, md5, url)
        _write_atomically(target / name, data)
    return target
