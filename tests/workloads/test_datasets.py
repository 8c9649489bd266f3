"""``hessian-lr data download``: checksum, unpacking, atomic install and one-line errors, with the URL
opener serving local fixture bytes (no test downloads anything)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error

import pytest
from fixtures import CIFAR_FOLDER, SHAKESPEARE_TEXT, cifar10_archive, write_cifar10

from hessian_lr.cli import main
from hessian_lr.workloads import cifar10, datasets, shakespeare
from hessian_lr.workloads.datadir import DATA_ENV, resolve_data_dir


class _Opener:
    """Serves ``payload`` for any URL and records the URLs asked for."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.urls: list[str] = []

    def __call__(self, url: str) -> io.BytesIO:
        self.urls.append(url)
        return io.BytesIO(self.payload)


@pytest.fixture
def cifar_source(tmp_path, monkeypatch):
    """The cifar10 source with the fixture archive's md5; the module's opener serves the archive."""
    payload, md5 = cifar10_archive(tmp_path / "made")
    monkeypatch.setitem(datasets.SOURCES, "cifar10", dataclasses.replace(datasets.SOURCES["cifar10"], digest=md5))
    opener = _Opener(payload)
    monkeypatch.setattr(datasets, "open_url", opener)
    return opener


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_the_published_sources_are_the_real_files():
    cifar, text = datasets.SOURCES["cifar10"], datasets.SOURCES["shakespeare"]
    assert (cifar.url, cifar.algorithm, cifar.digest) == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5", "c58f30108f718f92721af3b95e74349a")
    assert text.url.endswith("karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
    assert (text.size, text.algorithm) == (1_115_394, "sha256")


def test_a_download_is_verified_unpacked_and_readable_and_leaves_no_scratch(tmp_path, cifar_source):
    data_dir = tmp_path / "data"
    installed = datasets.download("cifar10", data_dir)
    assert installed == data_dir / CIFAR_FOLDER
    assert cifar_source.urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert _files(data_dir) == sorted([CIFAR_FOLDER] + [f"{CIFAR_FOLDER}/{name}" for name in (
        "batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")])
    splits = cifar10.load_cifar10(data_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 20)


def test_data_already_there_are_kept_without_the_network_and_corrupt_data_are_replaced(tmp_path, cifar_source):
    data_dir = tmp_path / "data"
    datasets.download("cifar10", data_dir)
    datasets.download("cifar10", data_dir)
    assert len(cifar_source.urls) == 1
    (data_dir / CIFAR_FOLDER / "data_batch_4").write_bytes(b"junk")
    datasets.download("cifar10", data_dir)
    assert len(cifar_source.urls) == 2 and len(cifar10.load_cifar10(data_dir).train) == 90
    assert _files(data_dir).count(f"{CIFAR_FOLDER}/data_batch_4") == 1 and len(_files(data_dir)) == 8


def test_a_wrong_checksum_is_one_line_and_leaves_nothing_behind(tmp_path, cifar_source, monkeypatch):
    monkeypatch.setitem(datasets.SOURCES, "cifar10", dataclasses.replace(datasets.SOURCES["cifar10"], digest="0" * 32))
    data_dir = tmp_path / "data"
    with pytest.raises(datasets.DownloadError) as info:
        datasets.download("cifar10", data_dir)
    got = hashlib.md5(cifar_source.payload).hexdigest()
    assert str(info.value) == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz does not match its published "
                               f"md5 {'0' * 32} (got {got}); nothing was installed")
    assert not data_dir.exists()


def test_a_failed_download_keeps_the_data_already_installed(tmp_path, cifar_source, monkeypatch):
    data_dir = tmp_path / "data"
    datasets.download("cifar10", data_dir)
    before = (data_dir / CIFAR_FOLDER / "data_batch_1").read_bytes()
    cifar_source.payload = cifar_source.payload[:-100]  # a truncated transfer
    with pytest.raises(datasets.DownloadError, match="does not match its published md5"):
        datasets.download("cifar10", data_dir, force=True)
    assert (data_dir / CIFAR_FOLDER / "data_batch_1").read_bytes() == before and len(_files(data_dir)) == 8


def test_a_network_failure_is_a_download_error(tmp_path, monkeypatch):
    def unreachable(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "open_url", unreachable)
    with pytest.raises(datasets.DownloadError) as info:
        datasets.download("shakespeare", tmp_path / "data")
    assert str(info.value) == (f"cannot download {datasets.SOURCES['shakespeare'].url}: "
                               "[Errno -3] Temporary failure in name resolution")
    assert not (tmp_path / "data").exists()


def test_an_archive_is_unpacked_only_inside_its_folder(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    source = tmp_path / "source"
    write_cifar10(source, per_file=2, test=2)
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / CIFAR_FOLDER, arcname=CIFAR_FOLDER)
        tar.add(source / CIFAR_FOLDER / "test_batch", arcname="../escaped")
        tar.add(source / CIFAR_FOLDER / "test_batch", arcname="elsewhere")
    payload = buffer.getvalue()
    monkeypatch.setitem(datasets.SOURCES, "cifar10", dataclasses.replace(
        datasets.SOURCES["cifar10"], digest=hashlib.md5(payload).hexdigest()))
    monkeypatch.setattr(datasets, "open_url", _Opener(payload))
    datasets.download("cifar10", tmp_path / "data")
    assert _files(tmp_path / "data") == _files(source) and not (tmp_path / "escaped").exists()


def test_an_archive_without_the_folder_is_refused(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("README")
        tar.addfile(info, io.BytesIO(b""))
    payload = buffer.getvalue()
    monkeypatch.setitem(datasets.SOURCES, "cifar10", dataclasses.replace(
        datasets.SOURCES["cifar10"], digest=hashlib.md5(payload).hexdigest()))
    monkeypatch.setattr(datasets, "open_url", _Opener(payload))
    with pytest.raises(datasets.DownloadError, match="holds no cifar-10-batches-py/ folder; nothing was installed"):
        datasets.download("cifar10", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_shakespeare_is_checked_by_size_and_sha256_and_saved_as_nanogpts_input_file(tmp_path, monkeypatch):
    payload = SHAKESPEARE_TEXT.encode()
    source = dataclasses.replace(datasets.SOURCES["shakespeare"], size=len(payload),
                                 digest=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(datasets.SOURCES, "shakespeare", source)
    monkeypatch.setattr(datasets, "open_url", _Opener(payload))
    path = datasets.download("shakespeare", tmp_path)
    assert path == tmp_path / "shakespeare_char" / "input.txt" and path.read_bytes() == payload
    assert shakespeare.load_shakespeare(tmp_path).decode(shakespeare.load_shakespeare(tmp_path).train) == \
        SHAKESPEARE_TEXT[:int(len(SHAKESPEARE_TEXT) * 0.9)]
    monkeypatch.setattr(datasets, "open_url", _Opener(payload + b"extra"))
    with pytest.raises(datasets.DownloadError, match=f"gave {len(payload) + 5:,} bytes, expected {len(payload):,}"):
        datasets.download("shakespeare", tmp_path, force=True)
    assert path.read_bytes() == payload and _files(tmp_path) == ["shakespeare_char", "shakespeare_char/input.txt"]


def test_the_data_folder_is_the_one_given_else_the_environments_else_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSIAN_LR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_data_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    assert datasets.installed_path("shakespeare") == tmp_path / "env" / "shakespeare_char" / "input.txt"


# -- the command ------------------------------------------------------------------------------------

def test_the_command_downloads_into_the_data_dir_and_prints_where(tmp_path, cifar_source, capsys):
    assert main(["data", "download", "cifar10", "--data-dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out == f"cifar10: {tmp_path / 'd' / CIFAR_FOLDER}\n"
    assert len(cifar10.load_cifar10(tmp_path / "d").test) == 20


def test_the_command_takes_the_data_dir_from_the_environment(tmp_path, cifar_source, monkeypatch, capsys):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert main(["data", "download", "cifar10"]) == 0
    assert (tmp_path / "env" / CIFAR_FOLDER / "test_batch").exists()


def test_a_failed_download_is_one_line_and_exit_code_1(tmp_path, cifar_source, monkeypatch, capsys):
    monkeypatch.setitem(datasets.SOURCES, "cifar10", dataclasses.replace(datasets.SOURCES["cifar10"], digest="0" * 32))
    assert main(["data", "download", "cifar10", "--data-dir", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hessian-lr: error: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz does not match")
    assert err.count("\n") == 1 and not (tmp_path / "d").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["data", "download", "mnist"], "argument DATASET: invalid choice: 'mnist' (choose from 'cifar10', 'shakespeare')"),
    (["data", "download", "cifar10", "--data-dir", " "], "argument --data-dir: expected a folder path"),
    (["data"], "the following arguments are required: ACTION"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(datasets, "open_url", _Opener(b""))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_data_dir_that_is_a_file_is_one_line_and_exit_code_2(tmp_path, cifar_source, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["data", "download", "cifar10", "--data-dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"hessian-lr: error: --data-dir {tmp_path / 'file'} is not a folder\n"
    assert cifar_source.urls == []
