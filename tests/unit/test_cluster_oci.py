"""Pure parts of the OCI image assembly: layers, config, manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

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
