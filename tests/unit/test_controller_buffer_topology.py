"""Pure decisions about replicated and cluster buffers: forming a cluster, rolling Valkey pods
with a failover before a primary restarts, and status.redis."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.unit.test_specs_support import edited, example

from hda.api.v1alpha1 import HyperDriveAccelerator
from hda.controller.buffer_commands import ClusterView, cluster_view
from hda.controller.buffer_topology import (
    AssignSlots,
    BufferProbe,
    DeletePod,
    Failover,
    ForgetNodes,
    GroupRollout,
    Meet,
    NodeAddress,
    NodeState,
    PodView,
    Replicate,
    Reshard,
    Resharded,
    SlotMove,
    Wait,
    buffer_status,
    cluster_plan,
    last_resharding,
    orphan_node_ids,
    primaries_seen,
    reshard_backoff,
    reshard_blocker,
    reshard_failure_event,
    reshard_moves,
    reshard_retry_delay,
    resharding_ended,
    retire_plan,
    retired,
    rollout_plan,
    slot_ranges,
)
from hda.controller.buffer_watch import (
    PROBE_OFF,
    BufferWatch,
    ProbeSeen,
    buffer_nodes,
    buffer_pass,
    buffer_pods_view,
    group_rollouts,
    leaving_nodes,
    next_buffer_step,
    probe_interval,
    removed_shards_kept,
)
from hda.controller.observe import PodSummary, pod_summary
from hda.controller.status import BufferObservation, Observation, compute_status
from hda.runtime.topology.reshard import ReshardProgress
from hda.specs import child_names

# --- helpers --------------------------------------------------------------------------------------


def group(name: str, pods: int) -> list[NodeAddress]:
    return [NodeAddress(f"{name}-{i}", name, f"{name}-{i}.h.ns.svc", 6379) for i in range(pods)]


def cluster_node(pod: str, **fields: object) -> NodeState:
    defaults: dict[str, object] = {
        "role": "primary",
        "node_id": f"id-{pod}",
        "known_nodes": 6,
        "slots_assigned": 16384,
    }
    return NodeState(pod=pod, **{**defaults, **fields})  # type: ignore[arg-type]


def formed_cluster(shards: int = 3) -> tuple[list[list[NodeAddress]], list[NodeState]]:
    groups = [group(f"v-shard-{s}", 2) for s in range(shards)]
    states = []
    for g, (first, last) in zip(groups, slot_ranges(shards), strict=True):
        primary, replica = g
        states.append(cluster_node(primary.pod, slots=last - first + 1, known_nodes=2 * shards))
        states.append(
            cluster_node(
                replica.pod,
                role="replica",
                follows_id=f"id-{primary.pod}",
                link_up=True,
                known_nodes=2 * shards,
            )
        )
    return groups, states


# --- slots and CLUSTER NODES ------------------------------------------------------------------------


def test_slots_are_split_into_contiguous_ranges_covering_all() -> None:
    assert slot_ranges(3) == [(0, 5460), (5461, 10921), (10922, 16383)]
    assert sum(last - first + 1 for first, last in slot_ranges(7)) == 16384


def test_cluster_nodes_give_own_slots_primary_and_peers_down() -> None:
    text = (
        "aaa 10.0.0.1:6379@16379,v-0.h myself,slave bbb 0 0 1 connected\n"
        "bbb 10.0.0.2:6379@16379,v-1.h master - 0 0 1 connected 0-99 200 [300->-ccc]\n"
        "ccc 10.0.0.3:6379@16379,v-2.h master,fail - 0 0 2 connected 100-199\n"
        "ddd 10.0.0.4:6379@16379,v-3.h master - 0 0 3 disconnected\n"
    )

    assert cluster_view(text) == ClusterView("bbb", (), ("ccc", "ddd"), ("ccc",))
    mine = text.replace("myself,slave bbb", "slave bbb").replace(
        "v-1.h master", "v-1.h myself,master"
    )
    view = cluster_view(mine)
    assert (view.follows_id, view.slot_ranges) == (None, ((0, 99), (200, 200)))


def test_cluster_view_of_a_reply_without_myself_is_refused() -> None:
    with pytest.raises(ValueError, match="no `myself` line"):
        cluster_view("bbb 10.0.0.2:6379@16379 master - 0 0 1 connected 0-16383\n")


def test_cluster_view_of_a_malformed_reply_names_the_line() -> None:
    text = "aaa 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-16383\nbbb 10.0.0.2\n"
    with pytest.raises(ValueError, match="CLUSTER NODES line 2: expected 8 or more fields"):
        cluster_view(text)


# --- cluster formation -------------------------------------------------------------------------------


def test_fresh_nodes_first_meet_the_seed() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(3)]
    probe = BufferProbe(
        tuple(cluster_node(a.pod, known_nodes=1, slots_assigned=0) for g in groups for a in g)
    )

    plan = cluster_plan(groups, probe)

    assert plan == [Meet("v-shard-0-0", a) for g in groups for a in g][1:]


def test_met_nodes_without_slots_get_one_range_per_shard_on_pod_0() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(3)]
    probe = BufferProbe(tuple(cluster_node(a.pod, slots_assigned=0) for g in groups for a in g))

    assert cluster_plan(groups, probe) == [
        AssignSlots("v-shard-0-0", 0, 5460),
        AssignSlots("v-shard-1-0", 5461, 10921),
        AssignSlots("v-shard-2-0", 10922, 16383),
    ]


def test_empty_primaries_replicate_their_shards_primary() -> None:
    groups = [group(f"v-shard-{s}", 3) for s in range(3)]
    states = []
    for g, (first, last) in zip(groups, slot_ranges(3), strict=True):
        states.append(cluster_node(g[0].pod, slots=last - first + 1, known_nodes=9))
        states.extend(cluster_node(a.pod, known_nodes=9) for a in g[1:])

    plan = cluster_plan(groups, BufferProbe(tuple(states)))

    assert plan == [Replicate(a.pod, f"id-{g[0].pod}") for g in groups for a in g[1:]]


def test_a_formed_cluster_needs_nothing() -> None:
    groups, states = formed_cluster()

    assert cluster_plan(groups, BufferProbe(tuple(states))) == []


def test_after_a_failover_the_new_primary_is_kept_and_nothing_is_replicated() -> None:
    groups, states = formed_cluster()
    # Shard 1's pod 1 took over; pod 0 came back as its replica.
    states[2] = cluster_node(
        "v-shard-1-0", role="replica", follows_id="id-v-shard-1-1", link_up=True
    )
    states[3] = cluster_node("v-shard-1-1", slots=5461)

    assert cluster_plan(groups, BufferProbe(tuple(states))) == []


def test_a_node_the_seed_sees_down_is_met_again_at_its_new_address() -> None:
    groups, states = formed_cluster()
    states[0] = cluster_node("v-shard-0-0", slots=5461, peers_down=("id-v-shard-2-1",))

    plan = cluster_plan(groups, BufferProbe(tuple(states)))

    assert plan == [Meet("v-shard-0-0", groups[2][1])]


def test_an_unreachable_node_stops_the_formation() -> None:
    groups, states = formed_cluster()
    states[4] = NodeState(pod="v-shard-2-0", reachable=False)

    assert cluster_plan(groups, BufferProbe(tuple(states))) == Wait(
        "Valkey pod v-shard-2-0 is not reachable"
    )


def test_a_new_shard_gets_replicas_but_no_slots() -> None:
    groups, states = formed_cluster()
    groups.append(group("v-shard-3", 2))
    states = [NodeState(**{**s.__dict__, "known_nodes": 8}) for s in states]
    states += [
        cluster_node("v-shard-3-0", known_nodes=8),
        cluster_node("v-shard-3-1", known_nodes=8),
    ]

    plan = cluster_plan(groups, BufferProbe(tuple(states)))

    assert plan == [Replicate("v-shard-3-1", "id-v-shard-3-0")]


# --- resharding --------------------------------------------------------------------------------------


def with_ranges(
    groups: list[list[NodeAddress]], ranges: list[list[tuple[int, int]]]
) -> BufferProbe:
    states = []
    known = sum(len(g) for g in groups)
    for g, served in zip(groups, ranges, strict=True):
        count = sum(last - first + 1 for first, last in served)
        states.append(
            cluster_node(g[0].pod, slots=count, slot_ranges=tuple(served), known_nodes=known)
        )
        states.extend(
            cluster_node(
                a.pod, role="replica", follows_id=f"id-{g[0].pod}", link_up=True, known_nodes=known
            )
            for a in g[1:]
        )
    return BufferProbe(tuple(states))


def test_a_new_shard_gets_an_even_share_from_every_other_shard() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])

    reshard = reshard_moves(groups, [], probe)

    assert reshard == Reshard(
        seed="v-shard-0-0",
        keep=tuple(f"id-v-shard-{s}-0" for s in range(4)),
        moves=(
            SlotMove("v-shard-0-0", "v-shard-3-0", 1365),
            SlotMove("v-shard-1-0", "v-shard-3-0", 1365),
            SlotMove("v-shard-2-0", "v-shard-3-0", 1366),
        ),
    )


def test_a_balanced_cluster_moves_nothing() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(3)]
    probe = with_ranges(groups, [[r] for r in slot_ranges(3)])

    assert reshard_moves(groups, [], probe) is None


def test_uncovered_slots_or_an_unreachable_node_move_nothing() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    partly = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16000)], []])
    ranges = [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []]
    gone = with_ranges(groups, ranges)
    gone = BufferProbe(
        tuple(
            NodeState(pod=n.pod, reachable=False) if n.pod == "v-shard-3-1" else n
            for n in gone.nodes
        )
    )

    assert reshard_moves(groups, [], partly) is None
    assert reshard_moves(groups, [], gone) is None


def test_a_removed_shard_is_drained_into_the_ones_kept() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    probe = with_ranges(groups, [[r] for r in slot_ranges(4)])

    reshard = reshard_moves(groups[:3], groups[3:], probe)

    assert reshard is not None
    assert {move.source for move in reshard.moves} == {"v-shard-3-0"}
    assert sum(move.count for move in reshard.moves) == 4096
    assert reshard.keep == ("id-v-shard-0-0", "id-v-shard-1-0", "id-v-shard-2-0")


def test_drained_removed_nodes_are_forgotten_everywhere_then_reset() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])

    plan = retire_plan(groups[:3], groups[3:], probe)

    assert plan == ForgetNodes(
        ("id-v-shard-3-0", "id-v-shard-3-1"),
        on=tuple(a.pod for g in groups[:3] for a in g),
        reset=("v-shard-3-0", "v-shard-3-1"),
    )


def test_a_removed_shard_still_serving_slots_is_not_forgotten() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    probe = with_ranges(groups, [[r] for r in slot_ranges(4)])

    assert retire_plan(groups[:3], groups[3:], probe) == Wait(
        "v-shard-3-0 of a removed shard still serves 4096 slots"
    )
    assert not retired(groups[3:], probe)


def test_a_removed_shard_is_retired_only_once_its_nodes_are_reset_and_alone() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    reset = BufferProbe(
        tuple(
            NodeState(n.pod, node_id=f"new-{n.pod}", role="primary", known_nodes=1)
            if n.pod.startswith("v-shard-3")
            else n
            for n in probe.nodes
        )
    )
    unreachable = BufferProbe(
        tuple(
            NodeState(n.pod, reachable=False) if n.pod == "v-shard-3-1" else n for n in reset.nodes
        )
    )

    assert not retired(groups[3:], probe)  # still a member: known to 8 nodes
    assert retired(groups[3:], reset)
    assert not retired(groups[3:], unreachable)
    assert retire_plan(groups[:3], groups[3:], reset) is None


def test_failed_ids_no_pod_has_are_orphans_unless_they_serve_slots() -> None:
    groups, states = formed_cluster()
    seen = [
        NodeState(
            **{
                **s.__dict__,
                "peers_down": ("lost", "lost-serving"),
                "peers_serving": ("lost-serving",),
            }
        )
        for s in states
    ]

    assert orphan_node_ids(groups, BufferProbe(tuple(seen))) == ("lost",)


def test_no_orphan_is_named_while_a_pod_does_not_answer() -> None:
    groups, states = formed_cluster()
    seen = [NodeState(**{**s.__dict__, "peers_down": ("lost",)}) for s in states]
    seen[1] = NodeState(seen[1].pod, reachable=False)  # it may be the one that had that ID

    assert orphan_node_ids(groups, BufferProbe(tuple(seen))) == ()


def test_a_pod_seen_down_under_its_own_id_is_no_orphan() -> None:
    groups, states = formed_cluster()
    seen = [NodeState(**{**s.__dict__, "peers_down": ("id-v-shard-1-1",)}) for s in states]

    assert orphan_node_ids(groups, BufferProbe(tuple(seen))) == ()


def test_a_grown_cluster_reshards_before_any_rollout() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "old"))

    actions, activity = next_buffer_step(hda, groups, probe, rollouts)

    assert [type(a) for a in actions] == [Reshard]
    assert activity is not None
    assert activity.startswith("resharding: moving 1365 slots logs-valkey-shard-0-0 -> ")


def test_a_slot_migration_an_earlier_operator_started_is_waited_for() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    export = "slots 0-1364 to id-logs-valkey-shard-3-0 (snapshotting)"
    probe = BufferProbe(
        tuple(
            dataclasses.replace(n, exports=(export,)) if n.pod == "logs-valkey-shard-0-0" else n
            for n in probe.nodes
        )
    )
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "new"))

    actions, activity = next_buffer_step(hda, groups, probe, rollouts)

    assert actions == []
    assert activity == (
        "resharding waits: a slot migration started earlier is still running "
        f"(logs-valkey-shard-0-0: {export})"
    )


def test_slots_not_all_served_block_planning_a_resharding() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    handing_over = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], [(0, 9)]])
    partly = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16000)], []])

    assert reshard_blocker(groups, [], handing_over) == "the primaries serve 16394 of 16384 slots"
    assert reshard_blocker(groups, [], partly) == "the primaries serve 16001 of 16384 slots"


def test_a_settled_slot_map_or_an_unreachable_node_blocks_nothing_here() -> None:
    groups = [group(f"v-shard-{s}", 2) for s in range(4)]
    uneven = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    gone = BufferProbe(
        tuple(
            NodeState(pod=n.pod, reachable=False) if n.pod == "v-shard-3-1" else n
            for n in uneven.nodes
        )
    )

    assert reshard_blocker(groups, [], uneven) is None
    assert reshard_blocker(groups, [], gone) is None


def test_while_a_resharding_runs_nothing_else_is_done() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "old"))
    running = reshard_moves(groups, [], probe)

    actions, activity = next_buffer_step(hda, groups, probe, rollouts, resharding=running)

    assert actions == []
    assert activity is not None
    assert activity.startswith("resharding: moving ")


def test_status_says_how_far_a_running_resharding_is() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    running = reshard_moves(groups, [], probe)
    so_far = ReshardProgress(moves_done=1, moves=3, slots_done=1365, slots=4096, state="streaming")

    _, activity = next_buffer_step(
        hda, groups, probe, [], resharding=running, reshard_progress=so_far
    )

    assert activity is not None
    assert activity.endswith("; 1365 of 4096 slots moved (1 of 3 moves); move 2: streaming")


def test_progress_wakes_the_hda_only_when_a_move_starts_ends_or_changes_state() -> None:
    watch = BufferWatch()
    wakes: list[int] = []

    def wake() -> None:
        wakes.append(1)

    for progress in [
        ReshardProgress(0, 3, 0, 4096),
        ReshardProgress(0, 3, 0, 4096, "snapshotting"),
        ReshardProgress(0, 3, 0, 4096, "snapshotting"),
        ReshardProgress(0, 3, 0, 4096, "snapshotting"),
        ReshardProgress(0, 3, 0, 4096, "success"),
        ReshardProgress(1, 3, 1365, 4096),
    ]:
        watch.reshard_progressed("ns/logs", wake, progress)

    assert len(wakes) == 4


def test_a_removed_shard_is_drained_then_forgotten_then_reported_out() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    leaving = leaving_nodes(hda, child_names(hda), 4)
    every = [*groups, *leaving]
    serving = with_ranges(every, [[r] for r in slot_ranges(4)])
    drained = with_ranges(every, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    out = BufferProbe(
        tuple(
            NodeState(n.pod, node_id=f"new-{n.pod}", role="primary", known_nodes=1)
            if "shard-3" in n.pod
            else n
            for n in drained.nodes
        )
    )

    first, _ = next_buffer_step(hda, groups, serving, [], leaving=leaving)
    second, _ = next_buffer_step(hda, groups, drained, [], leaving=leaving)
    third, activity = next_buffer_step(hda, groups, out, [], leaving=leaving)

    assert [type(a) for a in first] == [Reshard]
    assert [type(a) for a in second] == [ForgetNodes]
    assert third == []
    assert activity == (
        "removed shards logs-valkey-shard-3 drained and out of the cluster: deleting them"
    )


def test_status_keeps_the_last_resharding_until_a_new_one_ends() -> None:
    groups, states = formed_cluster()
    probe = BufferProbe(tuple(states))

    resharded = Resharded("2026-11-30T09:00:00Z", "failed after 1.0s: refused", 2, 4)
    ended = buffer_status("cluster", groups, probe, None, "t1", resharded=resharded)
    later = buffer_status("cluster", groups, probe, ended.to_wire(), "t2")

    assert (
        later.last_reshard_time,
        later.last_reshard,
        later.reshard_failures,
        later.reshard_shards,
    ) == ("2026-11-30T09:00:00Z", "failed after 1.0s: refused", 2, 4)
    assert last_resharding(later.to_wire()) == resharded


# --- back-off of failed reshardings ------------------------------------------------------------------

ENDED = "2026-11-30T09:00:00Z"


def at(seconds: float) -> datetime:
    """`seconds` after ENDED."""
    return datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def failed(failures: int, shards: int = 4) -> Resharded:
    return Resharded(ENDED, "failed after 0.1s: MIGRATESLOTS refused", failures, shards)


def test_retry_delay_doubles_from_the_base_per_failure_in_a_row() -> None:
    assert [reshard_retry_delay(n) for n in range(5)] == [0.0, 15.0, 30.0, 60.0, 120.0]


def test_retry_delay_stops_at_the_cap() -> None:
    assert reshard_retry_delay(6) == 480.0
    assert reshard_retry_delay(7) == 600.0
    assert reshard_retry_delay(10_000) == 600.0


def test_a_failed_resharding_waits_and_says_until_when() -> None:
    wait = reshard_backoff(failed(3), 4, at(59))
    assert wait == Wait("resharding failed 3 times in a row; next attempt at 2026-11-30T09:01:00Z")


def test_a_failed_resharding_is_due_once_its_wait_is_over() -> None:
    assert reshard_backoff(failed(1), 4, at(14)) is not None
    assert reshard_backoff(failed(1), 4, at(15)) is None


def test_the_wait_is_capped() -> None:
    assert reshard_backoff(failed(40), 4, at(599)) is not None
    assert reshard_backoff(failed(40), 4, at(600)) is None


def test_a_success_does_not_hold_the_next_resharding_back() -> None:
    succeeded = Resharded(ENDED, "moved 4096 slots", 0, 4)
    assert reshard_backoff(succeeded, 4, at(0)) is None
    assert reshard_backoff(None, 4, at(0)) is None


def test_a_changed_shard_count_retries_at_once() -> None:
    assert reshard_backoff(failed(5, shards=4), 5, at(1)) is None


def test_a_status_from_before_the_count_was_kept_does_not_hold_back() -> None:
    assert reshard_backoff(Resharded(ENDED, "failed", 1, None), 4, at(1)) is None


def test_failures_count_on_for_the_same_shards_and_reset_on_success() -> None:
    first = resharding_ended(None, ENDED, "failed", failed=True, shards=4)
    second = resharding_ended(first, ENDED, "failed", failed=True, shards=4)
    done = resharding_ended(second, ENDED, "moved", failed=False, shards=4)
    assert (first.failures, second.failures, done.failures) == (1, 2, 0)


def test_failures_count_anew_after_the_shard_count_changed() -> None:
    ended = resharding_ended(failed(3, shards=4), ENDED, "failed", failed=True, shards=5)
    assert (ended.failures, ended.shards) == (1, 5)


def test_the_event_of_a_failed_resharding_says_why_and_when_the_next_is_due() -> None:
    assert reshard_failure_event(failed(2)) == (
        "resharding failed 2 times in a row; next attempt at 2026-11-30T09:00:30Z "
        "(last: failed after 0.1s: MIGRATESLOTS refused)"
    )


def test_a_resharding_that_succeeded_is_no_failure_event() -> None:
    assert reshard_failure_event(Resharded(ENDED, "moved 4096 slots", 0, 4)) is None


def test_a_backed_off_resharding_waits_and_nothing_else_is_done() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "old"))
    wait = reshard_backoff(failed(2), 4, at(1))

    actions, activity = next_buffer_step(hda, groups, probe, rollouts, reshard_wait=wait)

    assert actions == []
    assert activity == "resharding failed 2 times in a row; next attempt at 2026-11-30T09:00:30Z"


# --- rollouts ----------------------------------------------------------------------------------------


def rollout(
    name: str, revisions: list[str], *, ready: bool = True, update: str = "new"
) -> GroupRollout:
    nodes = group(name, len(revisions))
    return GroupRollout(
        name=name,
        pods_wanted=len(revisions),
        update_revision=update,
        pods=tuple(PodView(a.pod, rev, ready) for a, rev in zip(nodes, revisions, strict=True)),
        nodes=tuple(nodes),
    )


def replicated_probe(primary: str, pods: int, *, in_sync: bool = True) -> BufferProbe:
    nodes = group("v", pods)
    address = next(a for a in nodes if a.pod == primary)
    return BufferProbe(
        tuple(
            NodeState(pod=a.pod, role="primary")
            if a.pod == primary
            else NodeState(pod=a.pod, role="replica", follows=(address.host, 6379), link_up=in_sync)
            for a in nodes
        ),
        sentinel_primary=(address.host, 6379),
    )


def test_outdated_replicas_go_first_highest_ordinal_first() -> None:
    plan = rollout_plan(
        "replicated", [rollout("v", ["old", "old", "old"])], replicated_probe("v-0", 3)
    )

    assert plan == DeletePod("v-2")


def test_the_primary_is_failed_over_once_only_it_is_outdated() -> None:
    plan = rollout_plan(
        "replicated", [rollout("v", ["old", "new", "new"])], replicated_probe("v-0", 3)
    )

    assert plan == Failover("v", "v-1")


def test_after_the_failover_the_old_primary_is_deleted_as_a_replica() -> None:
    plan = rollout_plan(
        "replicated", [rollout("v", ["old", "new", "new"])], replicated_probe("v-1", 3)
    )

    assert plan == DeletePod("v-0")


def test_no_failover_without_a_replica_in_sync() -> None:
    plan = rollout_plan(
        "replicated", [rollout("v", ["old", "new"])], replicated_probe("v-0", 2, in_sync=False)
    )

    assert plan == Wait("v: no replica in sync to fail v-0 over to")


def test_nothing_is_deleted_while_a_pod_is_not_ready() -> None:
    plan = rollout_plan(
        "replicated", [rollout("v", ["old", "new"], ready=False)], replicated_probe("v-0", 2)
    )

    assert isinstance(plan, Wait)


def test_an_unknown_primary_stops_the_rollout() -> None:
    probe = BufferProbe(replicated_probe("v-0", 3).nodes, sentinel_primary=None)

    assert rollout_plan("replicated", [rollout("v", ["old", "old", "old"])], probe) == Wait(
        "v: its primary is not known"
    )


def test_an_updated_set_needs_nothing() -> None:
    assert (
        rollout_plan("replicated", [rollout("v", ["new", "new"])], replicated_probe("v-0", 2))
        is None
    )


def test_cluster_rolls_one_shard_at_a_time_and_fails_over_on_the_shards_replica() -> None:
    _, states = formed_cluster()
    probe = BufferProbe(tuple(states))
    shards = [rollout(f"v-shard-{s}", ["old", "new"]) for s in range(3)]

    assert rollout_plan("cluster", shards, probe) == Failover("v-shard-0", "v-shard-0-1")
    shards[0] = rollout("v-shard-0", ["new", "new"])
    assert rollout_plan("cluster", shards, probe) == Failover("v-shard-1", "v-shard-1-1")


def test_a_shard_without_replicas_restarts_its_primary() -> None:
    nodes = group("v-shard-0", 1)
    probe = BufferProbe((cluster_node("v-shard-0-0", slots=16384, known_nodes=1),))
    shard = GroupRollout(
        "v-shard-0", 1, "new", (PodView("v-shard-0-0", "old", True),), tuple(nodes)
    )

    assert rollout_plan("cluster", [shard], probe) == DeletePod("v-shard-0-0")


# --- status.redis ------------------------------------------------------------------------------------


def test_status_names_each_shards_primary_slots_and_replicas_in_sync() -> None:
    groups, states = formed_cluster()

    status = buffer_status("cluster", groups, BufferProbe(tuple(states)), None, "t0")

    assert [
        (s.name, s.primary, s.replicas, s.replicas_in_sync, s.slots) for s in status.shards
    ] == [
        ("v-shard-0", "v-shard-0-0", 1, 1, 5461),
        ("v-shard-1", "v-shard-1-0", 1, 1, 5461),
        ("v-shard-2", "v-shard-2-0", 1, 1, 5462),
    ]
    assert status.last_failover_time is None


def test_a_changed_primary_sets_the_failover_time_and_an_unchanged_one_keeps_it() -> None:
    nodes = group("v", 3)
    before = buffer_status("replicated", [nodes], replicated_probe("v-0", 3), None, "t0").to_wire()

    moved = buffer_status("replicated", [nodes], replicated_probe("v-1", 3), before, "t1")
    kept = buffer_status("replicated", [nodes], replicated_probe("v-1", 3), moved.to_wire(), "t2")

    assert moved.last_failover_time == "t1"
    assert kept.last_failover_time == "t1"


def test_a_primary_change_across_a_probe_that_knew_no_primary_is_a_failover() -> None:
    nodes = group("v", 3)
    _, known = primaries_seen("replicated", [nodes], replicated_probe("v-0", 3), {})
    unknown = BufferProbe((), error="fewer than 2 sentinels agree on a primary")
    during, known = primaries_seen("replicated", [nodes], unknown, known)
    after, known = primaries_seen("replicated", [nodes], replicated_probe("v-1", 3), known)
    before = buffer_status("replicated", [nodes], unknown, None, "t1").to_wire()

    status = buffer_status(
        "replicated", [nodes], replicated_probe("v-1", 3), before, "t2", primary_moved=after
    )

    assert (during, after, known) == (False, True, {"v": "v-1"})
    assert status.last_failover_time == "t2"


def test_before_any_probe_the_last_known_primary_stays() -> None:
    nodes = group("v", 2)
    before = buffer_status("replicated", [nodes], replicated_probe("v-1", 2), None, "t0").to_wire()

    status = buffer_status("replicated", [nodes], None, before, "t1")

    assert status.shards[0].primary == "v-1"
    assert status.shards[0].replicas_in_sync is None


def test_a_failed_probe_says_why_and_claims_no_primary() -> None:
    nodes = group("v", 2)

    status = buffer_status(
        "replicated", [nodes], BufferProbe((), error="no Valkey pod reachable"), None, "t"
    )

    assert status.message == "no Valkey pod reachable"
    assert status.shards[0].primary is None


# --- one operator pass ------------------------------------------------------------------------------


def test_nodes_are_every_pod_the_spec_asks_for_by_statefulset() -> None:
    hda = cluster_hda()

    groups = buffer_nodes(hda, child_names(hda))

    assert [[a.pod for a in g] for g in groups] == [
        [f"logs-valkey-shard-{s}-{i}" for i in range(2)] for s in range(3)
    ]
    assert groups[1][1].host == "logs-valkey-shard-1-1.logs-valkey-headless.pipelines.svc"


def test_a_forming_cluster_is_formed_before_any_rollout() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    probe = BufferProbe(tuple(cluster_node(a.pod, slots_assigned=0) for g in groups for a in g))
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "old"))

    actions, activity = next_buffer_step(hda, groups, probe, rollouts)

    assert all(isinstance(action, AssignSlots) for action in actions)
    assert activity == "forming the cluster: AssignSlots"


def test_a_formed_cluster_rolls_its_outdated_pods() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    states = []
    for g, (first, last) in zip(groups, slot_ranges(3), strict=True):
        states.append(cluster_node(g[0].pod, slots=last - first + 1))
        states.append(
            cluster_node(g[1].pod, role="replica", follows_id=f"id-{g[0].pod}", link_up=True)
        )
    rollouts = group_rollouts(groups, statefulsets(groups), live_pods(groups, "old"))

    actions, activity = next_buffer_step(hda, groups, BufferProbe(tuple(states)), rollouts)

    assert actions == [DeletePod("logs-valkey-shard-0-1")]
    assert activity == "rolling Valkey: DeletePod logs-valkey-shard-0-1"


def test_a_statefulset_not_yet_seen_by_its_controller_is_not_rolled() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))

    assert group_rollouts(groups, {}, live_pods(groups, "old")) == []


def test_pod_summary_carries_revision_readiness_and_deletion() -> None:
    body = {
        "metadata": {
            "name": "logs-valkey-0",
            "labels": {"controller-revision-hash": "logs-valkey-5d8f"},
            "deletionTimestamp": "2026-11-30T00:00:00Z",
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }

    summary = pod_summary(body)

    assert (summary.revision, summary.ready, summary.terminating) == (
        "logs-valkey-5d8f",
        True,
        True,
    )


def test_status_carries_the_redis_topology_only_when_observed() -> None:
    nodes = tuple(group("v", 2))
    observed = BufferObservation("replicated", (nodes,), replicated_probe("v-0", 2), None)

    with_redis, _ = compute_status(Observation(generation=1, buffer_topology=observed), None, "t0")
    without, _ = compute_status(Observation(generation=1), None, "t0")

    assert with_redis["redis"]["shards"] == [
        {"name": "v", "primary": "v-0", "replicas": 1, "replicasInSync": 1}
    ]
    assert "redis" not in without


def cluster_hda() -> HyperDriveAccelerator:
    def edit(wire: dict[str, Any]) -> None:
        wire["spec"]["redis"]["topology"] = "cluster"

    return edited(example(), edit)


def statefulsets(groups: list[list[NodeAddress]]) -> dict[str, dict[str, Any]]:
    return {g[0].group: {"status": {"updateRevision": "new"}} for g in groups}


def live_pods(groups: list[list[NodeAddress]], revision: str) -> list[PodSummary]:
    return [
        PodSummary(a.pod, "valkey", (), revision=revision, ready=True) for g in groups for a in g
    ]


def test_with_the_probe_off_nothing_is_asked_and_status_says_so() -> None:
    watch = BufferWatch(enabled=False)
    hda = cluster_hda()

    probe = watch.probe("ns/logs", hda, child_names(hda), password=None, wake=lambda: None)

    assert probe == BufferProbe((), error=PROBE_OFF)
    assert watch.fresh("ns/logs") is None


def test_the_pods_view_is_each_valkey_pod_s_readiness_and_nothing_else() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    pods = [
        *live_pods(groups, "r1"),
        PodSummary("logs-ingest-abc", "ingest", (), ready=False),
    ]
    pods[1] = PodSummary(pods[1].name, "valkey", (), revision="r1", ready=False, terminating=True)

    view = buffer_pods_view(groups, pods)

    assert len(view) == 6
    assert ("logs-valkey-shard-0-1", False, True) in view
    assert all(name.startswith("logs-valkey-shard-") for name, _, _ in view)


def test_a_probe_is_stale_once_a_valkey_pod_changed_however_young_it_is() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    before = buffer_pods_view(groups, live_pods(groups, "r1"))
    deleted = buffer_pods_view(groups, live_pods(groups, "r1")[1:])
    seen = ProbeSeen(100.0, BufferProbe(()), before)

    assert not seen.stale(101.0, due=15.0, acted=0.0, pods=before)
    assert seen.stale(101.0, due=15.0, acted=0.0, pods=deleted)
    assert seen.stale(115.0, due=15.0, acted=0.0, pods=before)
    assert seen.stale(101.0, due=15.0, acted=100.5, pods=before)


def test_probes_come_every_2_s_for_30_s_after_a_valkey_pod_changed() -> None:
    def interval(now: float) -> float:
        return probe_interval(now, 15.0, unsettled_since=None, pods_changed_at=100.0)

    assert (interval(101.0), interval(130.0), interval(131.0)) == (2.0, 2.0, 15.0)


def test_probes_come_every_2_s_for_2_min_while_unsettled() -> None:
    def interval(now: float) -> float:
        return probe_interval(now, 15.0, unsettled_since=100.0, pods_changed_at=None)

    assert (interval(101.0), interval(220.0), interval(221.0)) == (2.0, 2.0, 15.0)
    assert probe_interval(0.0, 15.0, unsettled_since=None, pods_changed_at=None) == 15.0


def test_no_second_failover_while_the_first_has_not_moved_the_primary() -> None:
    groups = [rollout("v", ["old", "new", "new"])]

    waiting = rollout_plan("replicated", groups, replicated_probe("v-0", 3), {"v": "v-0"})
    moved = rollout_plan("replicated", groups, replicated_probe("v-1", 3), {"v": "v-0"})

    assert waiting == Wait("v: waiting for the failover away from v-0")
    assert moved == DeletePod("v-0")


def test_removed_shards_are_the_statefulsets_past_the_spec_s_count() -> None:
    hda = cluster_hda()  # 3 shards, 1 replica each

    leaving = leaving_nodes(hda, child_names(hda), 5)

    assert [[a.pod for a in g] for g in leaving] == [
        ["logs-valkey-shard-3-0", "logs-valkey-shard-3-1"],
        ["logs-valkey-shard-4-0", "logs-valkey-shard-4-1"],
    ]
    assert leaving[0][0].host == buffer_nodes(hda, child_names(hda))[0][0].host.replace(
        "shard-0", "shard-3"
    )
    assert leaving_nodes(hda, child_names(hda), 3) == []


def test_a_removed_shard_s_statefulset_and_budget_stay_until_a_probe_shows_it_out() -> None:
    hda = cluster_hda()
    groups = buffer_nodes(hda, child_names(hda))
    leaving = leaving_nodes(hda, child_names(hda), 4)
    drained = with_ranges([*groups, *leaving], [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    out = BufferProbe(
        tuple(
            NodeState(n.pod, node_id=f"new-{n.pod}", role="primary", known_nodes=1)
            if "shard-3" in n.pod
            else n
            for n in drained.nodes
        )
    )
    kept = {
        ("statefulsets", "logs-valkey-shard-3"),
        ("poddisruptionbudgets", "logs-valkey-shard-3"),
    }

    assert removed_shards_kept(leaving, None) == kept
    assert removed_shards_kept(leaving, BufferProbe((), error=PROBE_OFF)) == kept
    assert removed_shards_kept(leaving, drained) == kept  # empty, but still a member
    assert removed_shards_kept(leaving, out) == frozenset()


def test_resharding_waits_for_every_kept_shard_s_replicas_to_be_in_sync() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    syncing = BufferProbe(
        tuple(
            NodeState(**{**n.__dict__, "link_up": False}) if n.pod.endswith("shard-3-1") else n
            for n in probe.nodes
        )
    )

    actions, activity = next_buffer_step(hda, groups, syncing, [])

    assert actions == []
    assert activity == "resharding waits for the replicas of logs-valkey-shard-3 to be in sync"


# --- back-off, wired into the operator's pass ---------------------------------------------------------


async def test_a_failed_resharding_counts_on_from_the_last_failure() -> None:
    watch = BufferWatch()
    ended = asyncio.Event()

    async def refused() -> None:
        raise RuntimeError("MIGRATESLOTS refused")

    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    action = reshard_moves(groups, [], probe)
    assert action is not None
    watch.start_reshard("ns/logs", action, refused, ended.set, previous=failed(2), shards=4)
    await asyncio.wait_for(ended.wait(), 5)

    resharded = watch.resharded("ns/logs")
    assert resharded is not None
    assert (resharded.failures, resharded.shards) == (3, 4)
    assert resharded.outcome.endswith("MIGRATESLOTS refused")


async def test_the_operator_pass_schedules_a_wake_for_when_a_failed_resharding_is_due() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    watch = BufferWatch()

    await buffer_pass(
        watch, "ns/logs", hda, probe, [], groups=groups, sentinels=[], password=None,
        kube=_NoPods(), last_reshard=failed(2), now=at(10),
    )  # fmt: skip

    # Two failures in a row back off 30 s from ENDED: the retry's pass comes 20 s later, not
    # at the next resync.
    wake_in = watch.retry_wake_in("ns/logs")
    assert wake_in is not None
    assert 19 < wake_in <= 20
    watch.forget("ns/logs")
    assert watch.retry_wake_in("ns/logs") is None


async def test_the_operator_pass_schedules_no_wake_once_a_failed_resharding_is_due() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 4095)], [(4096, 8191)], [(8192, 12287)], [(12288, 16383)]])
    watch = BufferWatch()

    await buffer_pass(
        watch, "ns/logs", hda, probe, [], groups=groups, sentinels=[], password=None,
        kube=_NoPods(), last_reshard=failed(1), now=at(16),
    )  # fmt: skip

    assert watch.retry_wake_in("ns/logs") is None


async def test_the_operator_pass_holds_a_failed_resharding_back_until_due() -> None:
    hda = edited(cluster_hda(), lambda wire: wire["spec"]["redis"].update(shards=4))
    groups = buffer_nodes(hda, child_names(hda))
    probe = with_ranges(groups, [[(0, 5460)], [(5461, 10921)], [(10922, 16383)], []])
    watch = BufferWatch()

    done, activity = await buffer_pass(
        watch, "ns/logs", hda, probe, [], groups=groups, sentinels=[], password=None,
        kube=_NoPods(), last_reshard=failed(1), now=at(10),
    )  # fmt: skip

    assert (done, watch.resharding("ns/logs")) == ([], None)
    assert activity == "resharding failed once; next attempt at 2026-11-30T09:00:15Z"


class _NoPods:
    async def delete(self, kind: object, namespace: str | None, name: str) -> bool:
        raise AssertionError(f"no pod is deleted here, asked for {name}")


def test_a_probe_with_every_node_up_and_no_peer_down_is_settled() -> None:
    probe = BufferProbe((NodeState("a-0", role="primary"), NodeState("a-1", role="replica")))
    assert not probe.unsettled


@pytest.mark.parametrize(
    "probe",
    [
        BufferProbe((NodeState("a-0", role="primary"), NodeState("a-1", reachable=False))),
        BufferProbe((NodeState("a-0", role="primary", peers_down=("id-1",)),)),
        BufferProbe((), error="sentinels disagree"),
    ],
    ids=["node-unreachable", "peer-seen-down", "probe-error"],
)
def test_a_node_down_or_a_failed_probe_is_unsettled(probe: BufferProbe) -> None:
    assert probe.unsettled
