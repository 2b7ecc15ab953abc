"""The plane's Corefile only uses plugins that the slim CoreDNS build (tools/coredns) links."""

from __future__ import annotations

import re
from pathlib import Path

from hda.cluster import coredns

ROOT = Path(__file__).resolve().parents[2]


def linked_plugins() -> set[str]:
    source = (ROOT / "tools" / "coredns" / "main.go").read_text()
    return set(re.findall(r'"github.com/coredns/coredns/plugin/([a-z0-9]+)"', source))


def test_every_corefile_directive_is_linked() -> None:
    text = coredns.corefile(listen_address="10.128.0.1", kubeconfig=Path("/k"), ready_port=1)
    server_block = text.split("{", 1)[1]
    directives = {
        line.split()[0]
        for line in server_block.splitlines()
        if line.startswith("    ") and not line.startswith("     ") and line.strip() != "}"
    }
    assert directives == {"bind", "errors", "ready", "kubernetes", "cache", "loadbalance"}
    assert directives <= linked_plugins()
