"""The sandbox's address plan stays inside the ranges reserved for it: 198.18.0.0/15 and
fd00:198:18::/48, with node links apart from pod networks. Pure: no namespace is made."""

from __future__ import annotations

import ipaddress

from testbed.sandbox import addressing


def test_addressing_plan_is_within_the_reserved_ranges() -> None:
    bench_v4 = ipaddress.ip_network("198.18.0.0/15")
    ula_v6 = ipaddress.ip_network("fd00:198:18::/48")
    for index in range(1, addressing.MAX_NODES + 1):
        plan = addressing.node_plan(index)
        first = addressing.pod_addresses(plan, 0)
        last = addressing.pod_addresses(plan, plan.max_pods - 1)
        for v4, v6 in (first, last):
            assert v4 in bench_v4 and v4 in plan.pod_network_v4
            assert v6 in ula_v6 and v6 in plan.pod_network_v6
        for other in range(index + 1, addressing.MAX_NODES + 1):
            link = addressing.link_plan(index, other)
            assert not link.a_v4.network.overlaps(plan.pod_network_v4)
            assert link.a_v4.network == link.b_v4.network
            assert link.a_v6.network == link.b_v6.network
