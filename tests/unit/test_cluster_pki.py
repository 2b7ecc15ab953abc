"""The cluster PKI made by `openssl`: a CA and leaves that verify against it, kept on re-run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hda.cluster import pki

# openssl is a prerequisite (README, .ci/run): its absence is a failure, not a skip.
assert shutil.which("openssl"), "openssl is required: apt-get install openssl"


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def test_ensure_pki_creates_a_verifiable_chain(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    ca = str(tmp_path / "ca.crt")
    for leaf in ("apiserver.crt", "serving.crt", "front-proxy-client.crt", "admin.crt"):
        assert "OK" in openssl("verify", "-CAfile", ca, str(tmp_path / leaf))
    admin = openssl(
        "x509", "-in", str(tmp_path / "admin.crt"), "-noout", "-subject", "-ext", "extendedKeyUsage"
    )
    assert "O = system:masters" in admin
    assert "CN = kubernetes-admin" in admin
    assert "TLS Web Client Authentication" in admin
    apiserver = openssl(
        "x509", "-in", str(tmp_path / "apiserver.crt"), "-noout", "-ext", "subjectAltName"
    )
    assert "IP Address:127.0.0.1" in apiserver
    assert "DNS:kubernetes.default.svc" in apiserver
    assert (tmp_path / "sa.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"


def test_ensure_pki_keeps_what_exists(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    (tmp_path / "admin.crt").unlink()
    pki.ensure_pki(tmp_path)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert after["ca.crt"] == before["ca.crt"]
    assert after["apiserver.crt"] == before["apiserver.crt"]
    assert after["admin.crt"] != before["admin.crt"]  # only the missing one was remade
