"""Pure parts of the OCI image assembly: layers, config, manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from hda.cluster import oci
from hda.cluster.errors import ClusterError


def test_layer_from_files_is_reproducible() -> None:
    files = {"/pause": (b"\x7fELF", 0o755)}
    assert oci.layer_from_files(files) == oci.layer_from_files(files)


def test_layer_diff_id_is_the_digest_of_the_uncompressed_tar() -> None:
    layer = oci.layer_from_files({"/etc/hostname": (b"x\n", 0o644)})
    tar_bytes = gzip.decompress(layer.blob.data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.getmember("etc/hostname")
        assert member.mode == 0o644


def test_manifest_points_at_config_and_layers() -> None:
    layer = oci.layer_from_files({"/pause": (b"binary", 0o755)})
    config, manifest = oci.image_blobs(
        [layer], oci.ImageSettings(entrypoint=("/pause",), user="65535:65535")
    )
    document = json.loads(manifest.data)
    assert document["config"]["digest"] == config.digest
    assert document["layers"] == [layer.blob.descriptor()]
    image_config = json.loads(config.data)
    assert image_config["config"]["Entrypoint"] == ["/pause"]
    assert image_config["config"]["User"] == "65535:65535"
    assert image_config["rootfs"]["diff_ids"] == [layer.diff_id]


def test_push_refuses_a_registry_off_loopback() -> None:
    layer = oci.layer_from_files({"/a": (b"a", 0o644)})
    with pytest.raises(ClusterError, match="must be on loopback"):
        oci.push("http://192.0.2.1:5000", "x", "1", [layer], oci.ImageSettings())


def _tar(entries: list[tarfile.TarInfo], contents: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in entries:
            data = contents.get(info.name, b"")
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return gzip.compress(buffer.getvalue())


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = link
    return info


def test_unpack_applies_whiteouts_of_upper_layers(tmp_path: Path) -> None:
    lower = _tar(
        [
            _entry("etc", tarfile.DIRTYPE),
            _entry("etc/keep"),
            _entry("etc/gone"),
            _entry("opaque", tarfile.DIRTYPE),
            _entry("opaque/old"),
            _entry("link", tarfile.SYMTYPE, "etc/keep"),
        ],
        {"etc/keep": b"lower", "etc/gone": b"x", "opaque/old": b"x"},
    )
    upper = _tar(
        [
            _entry("etc/.wh.gone"),
            _entry("opaque/.wh..wh..opq"),
            _entry("opaque/new"),
            _entry("link"),
            _entry("etc/keep"),
        ],
        {"opaque/new": b"new", "link": b"now a file", "etc/keep": b"upper"},
    )
    image = oci.PulledImage(manifest={}, config={}, layers=[lower, upper])
    oci.unpack(image, tmp_path / "root")
    root = tmp_path / "root"
    assert (root / "etc/keep").read_bytes() == b"upper"
    assert not (root / "etc/gone").exists()
    assert not (root / "etc/.wh.gone").exists()
    assert sorted(path.name for path in (root / "opaque").iterdir()) == ["new"]
    assert not (root / "link").is_symlink()
    assert (root / "link").read_bytes() == b"now a file"


def test_unpack_keeps_modes(tmp_path: Path) -> None:
    sticky = _entry("tmp", tarfile.DIRTYPE)
    sticky.mode = 0o1777
    oci.unpack(oci.PulledImage(manifest={}, config={}, layers=[_tar([sticky], {})]), tmp_path)
    assert (tmp_path / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_unpack_keeps_every_path_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("host file")
    symlink_out = _tar([_entry("run", tarfile.SYMTYPE, str(tmp_path))], {})
    for layers in (
        [_tar([_entry("../escape")], {"../escape": b"x"})],
        [_tar([_entry("../.wh.victim")], {})],
        [symlink_out, _tar([_entry("run/.wh.victim")], {})],
        [symlink_out, _tar([_entry("run/victim")], {"run/victim": b"overwritten"})],
    ):
        with pytest.raises(ClusterError, match=r"outside the root|'\.\.'"):
            oci.unpack(oci.PulledImage(manifest={}, config={}, layers=layers), tmp_path / "root")
        assert (tmp_path / "victim").read_text() == "host file"
    assert not (tmp_path / "escape").exists()
