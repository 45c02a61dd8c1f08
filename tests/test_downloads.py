"""Downloads: PTB and Tiny Shakespeare fetched from (local file://) addresses, verified, cached, refetched when
damaged, never left partial; the real checksums match the shared copy."""

import hashlib
import io
import tarfile

import pytest

from rnn_jax import data, downloads
from rnn_jax.downloads import RemoteFile
from rnn_jax.errors import DataError


def make_ptb_archive(tmp_path, files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./simple-examples/data/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path = tmp_path / "simple-examples.tgz"
    path.write_bytes(buffer.getvalue())
    return path


def checksums(files):
    return {name: (len(content), hashlib.md5(content).hexdigest()) for name, content in files.items()}


def test_ptb_download_verifies_and_caches(tmp_path):
    files = {"ptb.train.txt": b" a b c \n b c \n", "ptb.valid.txt": b" a b \n", "ptb.test.txt": b" c \n"}
    archive = make_ptb_archive(tmp_path, files)
    cache = tmp_path / "cache"
    directory = downloads.download_ptb(cache, url=archive.as_uri(), files=checksums(files))
    assert (directory / "ptb.valid.txt").read_bytes() == files["ptb.valid.txt"]
    archive.unlink()  # the second call is served from the verified cache
    assert downloads.download_ptb(cache, url=archive.as_uri(), files=checksums(files)) == directory
    (directory / "ptb.test.txt").write_bytes(b"damaged")  # a damaged cache is refetched, and refetching fails here
    with pytest.raises(DataError, match="could not download the PTB archive"):
        downloads.download_ptb(cache, url=archive.as_uri(), files=checksums(files))


def test_ptb_download_rejects_wrong_checksum_and_leaves_nothing(tmp_path):
    files = {"ptb.train.txt": b"x\n", "ptb.valid.txt": b"y\n", "ptb.test.txt": b"z\n"}
    archive = make_ptb_archive(tmp_path, files)
    wrong = dict(checksums(files), **{"ptb.train.txt": (2, "0" * 32)})
    with pytest.raises(DataError, match="ptb.train.txt has md5 .*, expected 0000"):
        downloads.download_ptb(tmp_path / "cache", url=archive.as_uri(), files=wrong)
    assert not (tmp_path / "cache" / "ptb" / "ptb.train.txt").exists()
    wrong_size = dict(checksums(files), **{"ptb.valid.txt": (5, "0" * 32)})
    with pytest.raises(DataError, match="ptb.valid.txt has 2 bytes, expected 5"):
        downloads.download_ptb(tmp_path / "cache", url=archive.as_uri(), files=wrong_size)
    partial = make_ptb_archive(tmp_path, {"ptb.train.txt": b"x\n"})
    with pytest.raises(DataError, match="the archive has no data/ptb.valid.txt"):
        downloads.download_ptb(tmp_path / "cache2", url=partial.as_uri(), files=checksums(files))
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(DataError, match="not a tar archive"):
        downloads.download_ptb(tmp_path / "cache3", url=(tmp_path / "plain.txt").as_uri(), files=checksums(files))


def test_real_ptb_checksums_match_the_references():
    assert downloads.PTB_FILES["ptb.valid.txt"] == (399_782, "aa0affc06ff7c36e977d7cd49e3839bf")
    assert downloads.PTB_FILES["ptb.test.txt"] == (449_945, "8b80168b89c18661a38ef683c0dc3721")
    assert downloads.PTB_FILES["ptb.train.txt"][0] == 5_101_618


def remote_for(path, content=None):
    content = path.read_bytes() if content is None else content
    return RemoteFile(path.as_uri(), len(content), hashlib.sha256(content).hexdigest())


def test_tinyshakespeare_downloads_verifies_and_caches(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50)
    remote = remote_for(source)
    path = downloads.download_tinyshakespeare(tmp_path / "cache", remote=remote)
    assert path == tmp_path / "cache" / "tinyshakespeare" / "input.txt" and path.read_bytes() == source.read_bytes()
    source.unlink()  # served from the verified cache now
    assert downloads.download_tinyshakespeare(tmp_path / "cache", remote=remote) == path
    path.write_text("damaged")  # a damaged cache is refetched, and refetching fails here (the source is gone)
    with pytest.raises(DataError, match=r"could not download Tiny Shakespeare .*\(--data-source PATH\)"):
        downloads.download_tinyshakespeare(tmp_path / "cache", remote=remote)


def test_tinyshakespeare_with_a_wrong_digest_leaves_nothing(tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("not the real text\n")
    wrong = remote_for(source)._replace(digest="0" * 64)
    with pytest.raises(DataError, match="input.txt has sha256 .*, expected 0000"):
        downloads.download_tinyshakespeare(tmp_path / "cache", remote=wrong)
    assert list((tmp_path / "cache").rglob("*")) == []  # no partial or temporary file
    with pytest.raises(DataError, match="has 18 bytes, expected 5"):
        downloads.download_tinyshakespeare(tmp_path / "cache", remote=wrong._replace(size=5))


def test_the_real_tinyshakespeare_checksum_matches_the_shared_copy(shakespeare_path, tmp_path):
    remote = downloads.TINYSHAKESPEARE._replace(url=shakespeare_path.as_uri())  # only the address is local
    path = downloads.download_tinyshakespeare(tmp_path, remote=remote)
    assert path.stat().st_size == 1_115_394


def test_the_tinyshakespeare_source_reads_the_cache(shakespeare_path, tmp_path, monkeypatch):
    remote = downloads.TINYSHAKESPEARE._replace(url=shakespeare_path.as_uri())
    downloads.download_tinyshakespeare(tmp_path, remote=remote)  # fills the cache: no network below
    monkeypatch.setattr(downloads, "TINYSHAKESPEARE", remote._replace(url="http://unreachable.invalid/input.txt"))
    corpus = data.load_corpus(data.DataConfig(source="tinyshakespeare", cache_dir=str(tmp_path), max_vocab=None))
    assert corpus.vocab.size == 66 and "Tiny Shakespeare" in corpus.description
    assert len(corpus.train) + len(corpus.valid) + len(corpus.test) == 1_115_394
