"""Certificates and keys of a local cluster, made with the `openssl` command (OpenSSL >= 3).

One CA signs: the apiserver serving certificate, a loopback serving certificate shared by the
controller-manager, scheduler and kwok, and the admin client certificate (`system:masters`).
A separate key pair signs ServiceAccount tokens. ECDSA P-256 throughout: fast to generate and
accepted by every component. `certificate_requests` and `extension_config` are pure.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from hda.cluster import flags
from hda.cluster.errors import ClusterError
from hda.cluster.manifests import kubeconfig_manifest

log = logging.getLogger(__name__)

CA_COMMON_NAME: Final = "hda-local-ca"
ADMIN_COMMON_NAME: Final = "kubernetes-admin"
ADMIN_ORGANIZATION: Final = "system:masters"
_CA_DAYS: Final = 3650
_LEAF_DAYS: Final = 825
_KEY_OPTIONS: Final = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertRequest:
    """A leaf certificate signed by the cluster CA."""

    cert_file: str
    key_file: str
    common_name: str
    organization: str | None = None
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = field(default=())

    @property
    def subject(self) -> str:
        org = f"/O={self.organization}" if self.organization else ""
        return f"{org}/CN={self.common_name}"


def certificate_requests() -> list[CertRequest]:
    """The leaf certificates of a cluster."""
    return [
        CertRequest(
            cert_file=flags.APISERVER_CERT,
            key_file=flags.APISERVER_KEY,
            common_name="kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=(flags.LOOPBACK, flags.KUBERNETES_SERVICE_IP),
        ),
        CertRequest(
            cert_file=flags.SERVING_CERT,
            key_file=flags.SERVING_KEY,
            common_name="hda-loopback-serving",
            server=True,
            dns_names=("localhost",),
            ip_addresses=(flags.LOOPBACK,),
        ),
        CertRequest(
            cert_file=flags.FRONT_PROXY_CERT,
            key_file=flags.FRONT_PROXY_KEY,
            common_name=flags.FRONT_PROXY_COMMON_NAME,
            client=True,
        ),
        CertRequest(
            cert_file=flags.ADMIN_CERT,
            key_file=flags.ADMIN_KEY,
            common_name=ADMIN_COMMON_NAME,
            organization=ADMIN_ORGANIZATION,
            client=True,
        ),
        # The apiserver's identity towards kubelets (logs, exec, port-forward); RBAC grants it
        # `system:kubelet-api-admin`, see `node_pki.rbac_manifests`.
        CertRequest(
            cert_file=flags.KUBELET_CLIENT_CERT,
            key_file=flags.KUBELET_CLIENT_KEY,
            common_name=flags.KUBELET_CLIENT_COMMON_NAME,
            client=True,
        ),
    ]


def extension_config(request: CertRequest) -> str:
    """An OpenSSL extension section (`[ext]`) for `openssl x509 -req -extfile`."""
    usages = [
        name
        for name, wanted in (("serverAuth", request.server), ("clientAuth", request.client))
        if wanted
    ]
    if not usages:
        raise ValueError(f"{request.cert_file}: a certificate must be for server or client use")
    lines = [
        "[ext]",
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature, keyEncipherment",
        f"extendedKeyUsage = {', '.join(usages)}",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
    ]
    sans = [f"DNS:{name}" for name in request.dns_names]
    sans += [f"IP:{address}" for address in request.ip_addresses]
    if sans:
        lines.append(f"subjectAltName = {', '.join(sans)}")
    return "\n".join(lines) + "\n"


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise ClusterError("the `openssl` command is required to create the cluster PKI")
    result = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _make_ca(pki_dir: Path) -> None:
    _openssl(
        "req",
        "-x509",
        *_KEY_OPTIONS,
        "-keyout",
        str(pki_dir / flags.CA_KEY),
        "-out",
        str(pki_dir / flags.CA_CERT),
        "-days",
        str(_CA_DAYS),
        "-subj",
        f"/CN={CA_COMMON_NAME}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )


def _make_leaf(pki_dir: Path, request: CertRequest) -> None:
    with tempfile.TemporaryDirectory(prefix="hda-pki-") as tmp:
        csr = Path(tmp) / "leaf.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text(extension_config(request))
        _openssl(
            "req",
            "-new",
            *_KEY_OPTIONS,
            "-keyout",
            str(pki_dir / request.key_file),
            "-out",
            str(csr),
            "-subj",
            request.subject,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(pki_dir / flags.CA_CERT),
            "-CAkey",
            str(pki_dir / flags.CA_KEY),
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            str(_LEAF_DAYS),
            "-extfile",
            str(ext),
            "-extensions",
            "ext",
            "-out",
            str(pki_dir / request.cert_file),
        )


def _make_service_account_keys(pki_dir: Path) -> None:
    key = pki_dir / flags.SA_KEY
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(pki_dir / flags.SA_PUB))


def ensure_leaf(pki_dir: Path, request: CertRequest) -> None:
    """Create the leaf unless both its files exist (the CA must exist already)."""
    if not (pki_dir / request.cert_file).exists() or not (pki_dir / request.key_file).exists():
        log.info("creating certificate %s (CN=%s)", request.cert_file, request.common_name)
        _make_leaf(pki_dir, request)


def ensure_pki(pki_dir: Path) -> None:
    """Create whatever of the cluster PKI is missing in `pki_dir`; keep what exists."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki_dir.chmod(0o700)
    if not (pki_dir / flags.CA_CERT).exists() or not (pki_dir / flags.CA_KEY).exists():
        log.info("creating cluster CA in %s", pki_dir)
        _make_ca(pki_dir)
        for request in certificate_requests():  # leaves of an old CA are worthless
            (pki_dir / request.cert_file).unlink(missing_ok=True)
    for request in certificate_requests():
        ensure_leaf(pki_dir, request)
    if not (pki_dir / flags.SA_KEY).exists() or not (pki_dir / flags.SA_PUB).exists():
        log.info("creating ServiceAccount signing key")
        _make_service_account_keys(pki_dir)


def write_kubeconfig(
    path: Path, pki_dir: Path, *, cluster_name: str, server: str, cert: str, key: str, user: str
) -> None:
    """A kubeconfig at `path` (mode 0600) with the CA and the client pair `cert`/`key` of
    `pki_dir` embedded."""
    document = kubeconfig_manifest(
        cluster_name,
        server,
        ca_pem=(pki_dir / flags.CA_CERT).read_bytes(),
        cert_pem=(pki_dir / cert).read_bytes(),
        key_pem=(pki_dir / key).read_bytes(),
        user=user,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
