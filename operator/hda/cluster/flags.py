"""Command lines of the control-plane components, and where each one reports health.

Pure builders: `(bin_dir, layout, ports) -> argv`. Every listener binds 127.0.0.1 on a port from
`Ports`, so two clusters can run side by side. Flags follow kwokctl's binary runtime and envtest
(see notes/control-plane.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from hda.cluster.layout import (
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    KWOK,
    SCHEDULER,
    ClusterLayout,
    Ports,
)

LOOPBACK: Final = "127.0.0.1"
SERVICE_CLUSTER_IP_RANGE: Final = "10.96.0.0/16"
#: First address of the service range: the `kubernetes` Service, so a SAN of the serving cert.
KUBERNETES_SERVICE_IP: Final = "10.96.0.1"
POD_CIDR: Final = "10.244.0.0/16"
FAKE_NODE_IP: Final = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
NODE_LEASE_DURATION_SECONDS: Final = 40
_HEALTH_PATHS: Final = "/healthz,/readyz,/livez,/metrics"

# PKI file names (in `layout.pki_dir`).
CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
APISERVER_CERT: Final = "apiserver.crt"
APISERVER_KEY: Final = "apiserver.key"
#: Serving certificate of controller-manager, scheduler and kwok (loopback SANs only).
SERVING_CERT: Final = "serving.crt"
SERVING_KEY: Final = "serving.key"
#: Client certificate the apiserver presents to aggregated APIs (front proxy).
FRONT_PROXY_CERT: Final = "front-proxy-client.crt"
FRONT_PROXY_KEY: Final = "front-proxy-client.key"
FRONT_PROXY_COMMON_NAME: Final = "front-proxy-client"
#: Client certificate the apiserver presents to kubelets.
KUBELET_CLIENT_CERT: Final = "apiserver-kubelet-client.crt"
KUBELET_CLIENT_KEY: Final = "apiserver-kubelet-client.key"
KUBELET_CLIENT_COMMON_NAME: Final = "kube-apiserver-kubelet-client"
ADMIN_CERT: Final = "admin.crt"
ADMIN_KEY: Final = "admin.key"
SA_KEY: Final = "sa.key"
SA_PUB: Final = "sa.pub"


def _url(scheme: str, port: int) -> str:
    return f"{scheme}://{LOOPBACK}:{port}"


def etcd_args(bin_dir: Path, layout: ClusterLayout, ports: Ports) -> list[str]:
    client = _url("http", ports.etcd_client)
    peer = _url("http", ports.etcd_peer)
    return [
        str(bin_dir / ETCD),
        "--name=hda",
        f"--data-dir={layout.etcd_data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=hda={peer}",
        "--initial-cluster-state=new",
        "--auto-compaction-retention=1",
        # Test clusters are disposable: skip fsync, it dominates etcd latency on slow disks.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_address_args(advertise_address: str | None) -> list[str]:
    if advertise_address is None:
        # 1.37 rejects a loopback advertise address with the default `lease` reconciler; with
        # `none` the `kubernetes` Service simply has no endpoints, which kwok pods never use.
        return [
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            "--endpoint-reconciler-type=none",
        ]
    # Real pods reach the apiserver through the `kubernetes` Service, whose endpoint is the
    # first node's bridge address. Listening on every address is what makes that address
    # (and loopback, for the kubeconfig) work; the INPUT guard of `network` drops the port for
    # any interface but loopback and the cluster's bridges.
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={advertise_address}",
        "--endpoint-reconciler-type=lease",
    ]


def _audit_args(layout: ClusterLayout) -> list[str]:
    return [
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json",
        # Blocking: an event is on disk before its response leaves, so a reader misses nothing.
        "--audit-log-mode=blocking",
        # 0 would mean lumberjack's 100 MB default: one file must hold a whole test run.
        "--audit-log-maxsize=1024",
    ]


def apiserver_args(
    bin_dir: Path,
    layout: ClusterLayout,
    ports: Ports,
    advertise_address: str | None = None,
    *,
    audit: bool = False,
) -> list[str]:
    """`advertise_address` is set on clusters with real nodes (see `_apiserver_address_args`);
    `audit` turns the audit log on (the policy file must be at `layout.audit_policy`)."""
    pki = layout.pki
    return [
        str(bin_dir / APISERVER),
        f"--etcd-servers={_url('http', ports.etcd_client)}",
        *_apiserver_address_args(advertise_address),
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki(APISERVER_CERT)}",
        f"--tls-private-key-file={pki(APISERVER_KEY)}",
        f"--client-ca-file={pki(CA_CERT)}",
        f"--service-account-key-file={pki(SA_PUB)}",
        f"--service-account-signing-key-file={pki(SA_KEY)}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--authorization-mode=Node,RBAC",
        # The default admission plugins stay on: PodSecurity, ServiceAccount, NodeRestriction...
        "--allow-privileged=true",
        # Front-proxy (request header) authentication, as kubeadm sets it up: the controllers'
        # delegated authentication reads this CA, and aggregated APIs would trust it.
        f"--requestheader-client-ca-file={pki(CA_CERT)}",
        f"--requestheader-allowed-names={FRONT_PROXY_COMMON_NAME}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki(FRONT_PROXY_CERT)}",
        f"--proxy-client-key-file={pki(FRONT_PROXY_KEY)}",
        f"--cert-dir={layout.state_dir / 'apiserver-certs'}",
        # Kubelets (real nodes) are reached by InternalIP only, never by a name the host's
        # resolver would look up, with a client certificate and a verified serving certificate.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki(KUBELET_CLIENT_CERT)}",
        f"--kubelet-client-key={pki(KUBELET_CLIENT_KEY)}",
        f"--kubelet-certificate-authority={pki(CA_CERT)}",
        "--profiling=false",
        *(_audit_args(layout) if audit else []),
    ]


def _loopback_secure_serving(layout: ClusterLayout, port: int) -> list[str]:
    return [
        f"--kubeconfig={layout.kubeconfig}",
        f"--authentication-kubeconfig={layout.kubeconfig}",
        f"--authorization-kubeconfig={layout.kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={layout.pki(SERVING_CERT)}",
        f"--tls-private-key-file={layout.pki(SERVING_KEY)}",
        f"--authorization-always-allow-paths={_HEALTH_PATHS}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_args(bin_dir: Path, layout: ClusterLayout, ports: Ports) -> list[str]:
    pki = layout.pki
    return [
        str(bin_dir / CONTROLLER_MANAGER),
        *_loopback_secure_serving(layout, ports.controller_manager),
        f"--root-ca-file={pki(CA_CERT)}",
        f"--service-account-private-key-file={pki(SA_KEY)}",
        # Each controller uses its own ServiceAccount, so RBAC is exercised as in production.
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki(CA_CERT)}",
        f"--cluster-signing-key-file={pki(CA_KEY)}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
    ]


def scheduler_args(bin_dir: Path, layout: ClusterLayout, ports: Ports) -> list[str]:
    return [str(bin_dir / SCHEDULER), *_loopback_secure_serving(layout, ports.scheduler)]


def kwok_args(bin_dir: Path, layout: ClusterLayout, ports: Ports) -> list[str]:
    return [
        str(bin_dir / KWOK),
        f"--config={layout.kwok_config}",
        f"--kubeconfig={layout.kubeconfig}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--server-address={LOOPBACK}:{ports.kwok}",
        f"--tls-cert-file={layout.pki(SERVING_CERT)}",
        f"--tls-private-key-file={layout.pki(SERVING_KEY)}",
        f"--cidr={POD_CIDR}",
        f"--node-ip={FAKE_NODE_IP}",
        f"--node-lease-duration-seconds={NODE_LEASE_DURATION_SECONDS}",
    ]


def component_args(
    component: str,
    bin_dir: Path,
    layout: ClusterLayout,
    ports: Ports,
    advertise_address: str | None = None,
    *,
    audit: bool = False,
) -> list[str]:
    """The argv that starts `component` (one of `layout.COMPONENTS`); `audit` is for the
    apiserver (see `apiserver_args`)."""
    if component == APISERVER:
        return apiserver_args(bin_dir, layout, ports, advertise_address, audit=audit)
    builders = {
        ETCD: etcd_args,
        APISERVER: apiserver_args,
        CONTROLLER_MANAGER: controller_manager_args,
        SCHEDULER: scheduler_args,
        KWOK: kwok_args,
    }
    try:
        builder = builders[component]
    except KeyError:
        raise ValueError(f"unknown component {component!r}") from None
    return builder(bin_dir, layout, ports)


def health_url(component: str, ports: Ports) -> str:
    """The URL that answers 200 once `component` is healthy."""
    urls = {
        ETCD: f"{_url('http', ports.etcd_client)}/health",
        # /readyz turns 200 only after the bootstrap RBAC and priority-class hooks finished.
        APISERVER: f"{_url('https', ports.apiserver)}/readyz",
        CONTROLLER_MANAGER: f"{_url('https', ports.controller_manager)}/healthz",
        SCHEDULER: f"{_url('https', ports.scheduler)}/healthz",
        # kwok multiplexes plain HTTP and TLS on one port.
        KWOK: f"{_url('http', ports.kwok)}/healthz",
    }
    try:
        return urls[component]
    except KeyError:
        raise ValueError(f"unknown component {component!r}") from None


def apiserver_url(ports: Ports) -> str:
    return _url("https", ports.apiserver)
