"""free_port: ports handed out for servers started later never collide within one process."""

from __future__ import annotations

from hda.runtime.embedded import free_port


def test_ports_handed_out_in_a_row_are_all_different() -> None:
    ports = [free_port() for _ in range(1000)]  # the kernel alone repeats some (measured)

    assert len(set(ports)) == len(ports)


def test_a_bus_port_is_handed_out_with_its_port() -> None:
    port = free_port(bus_offset=10000)
    later = {free_port() for _ in range(1000)}

    assert port + 10000 <= 65535
    assert port not in later
    assert port + 10000 not in later
