"""mmdebstrap recipes of the Debian base root filesystems."""

from __future__ import annotations

from pathlib import Path

from hda.cluster import rootfs


def _option(argv: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]


def test_python_base_is_minbase_with_merged_usr_and_debians_python() -> None:
    argv = rootfs.mmdebstrap_args(rootfs.PYTHON_BASE, Path("/out.tar"))
    assert argv[0] == "mmdebstrap"
    assert "--variant=minbase" in argv
    assert _option(argv, "hook-dir") == ["/usr/share/mmdebstrap/hooks/merged-usr"]
    assert _option(argv, "include") == ["python3,python3-venv,ca-certificates"]
    assert argv[-2:] == ["bookworm", "/out.tar"]


def test_valkey_base_has_the_cli_and_the_uid_999_user() -> None:
    argv = rootfs.mmdebstrap_args(rootfs.VALKEY_BASE, Path("/out.tar"))
    assert _option(argv, "include") == ["redis-tools"]
    hooks = " ; ".join(_option(argv, "customize-hook"))
    assert "--uid 999" in hooks
    assert "--gid 999" in hooks
    assert 'ln -s redis-cli "$1/usr/bin/valkey-cli"' in hooks


def test_no_mirror_is_named() -> None:
    argv = rootfs.mmdebstrap_args(rootfs.PYTHON_BASE, Path("/out.tar"))
    assert not [arg for arg in argv if "://" in arg]


def test_cache_key_changes_with_the_recipe_only() -> None:
    same = rootfs.BaseRecipe("python", ("python3", "python3-venv", "ca-certificates"))
    assert rootfs.cache_key(same) == rootfs.cache_key(rootfs.PYTHON_BASE)
    other = rootfs.BaseRecipe("python", ("python3",))
    assert rootfs.cache_key(other) != rootfs.cache_key(rootfs.PYTHON_BASE)


def test_a_cached_layer_that_does_not_match_its_digest_is_not_used(tmp_path: Path) -> None:
    blob_path = tmp_path / "rootfs" / f"{rootfs.cache_key(rootfs.PYTHON_BASE)}.tar.gz"
    blob_path.parent.mkdir()
    blob_path.write_bytes(b"corrupted")
    blob_path.with_suffix("").with_suffix(".json").write_text(
        '{"digest": "sha256:00", "diff_id": "sha256:00"}'
    )
    assert rootfs.cached_layer(tmp_path, rootfs.PYTHON_BASE) is None
