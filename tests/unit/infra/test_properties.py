"""server.properties generation for one and three combined KRaft nodes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from infra.kafka.properties import (
    NodeAddress,
    new_cluster_id,
    quorum_voters,
    render,
    server_properties,
)


def _cluster(size: int) -> list[NodeAddress]:
    return [
        NodeAddress(node_id=i + 1, port=9000 + i, controller_port=9100 + i) for i in range(size)
    ]


def test_single_node_is_a_combined_broker_and_controller_with_its_own_quorum() -> None:
    (node,) = nodes = _cluster(1)
    props = server_properties(node, nodes, log_dir=Path("/data/node-1"))

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9100"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9000,CONTROLLER://127.0.0.1:9100"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9000"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == "/data/node-1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


@pytest.mark.parametrize(
    ("size", "replicas", "min_isr"), [(1, "1", "1"), (2, "2", "2"), (3, "3", "2"), (5, "3", "2")]
)
def test_replication_factors_fit_the_node_count(size: int, replicas: str, min_isr: str) -> None:
    nodes = _cluster(size)
    props = server_properties(nodes[0], nodes, log_dir=Path("/d"))

    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
        "default.replication.factor",
    ):
        assert props[key] == replicas, key
    assert props["transaction.state.log.min.isr"] == min_isr
    assert props["share.coordinator.state.topic.min.isr"] == min_isr


def test_only_multi_node_clusters_fence_dead_brokers_fast() -> None:
    one = server_properties(_cluster(1)[0], _cluster(1), log_dir=Path("/d"))
    three = server_properties(_cluster(3)[1], _cluster(3), log_dir=Path("/d"))

    assert "broker.session.timeout.ms" not in one
    assert three["broker.session.timeout.ms"] == "3000"
    assert three["broker.heartbeat.interval.ms"] == "500"


def test_every_node_of_three_lists_all_voters_and_only_its_own_listeners() -> None:
    nodes = _cluster(3)
    voters = "1@127.0.0.1:9100,2@127.0.0.1:9101,3@127.0.0.1:9102"
    assert quorum_voters(nodes) == voters
    for node in nodes:
        props = server_properties(node, nodes, log_dir=Path("/d"))
        assert props["controller.quorum.voters"] == voters
        assert props["node.id"] == str(node.node_id)
        assert f":{node.port}," in props["listeners"]


def test_auto_topic_creation_is_left_at_the_kafka_default() -> None:
    props = server_properties(_cluster(1)[0], _cluster(1), log_dir=Path("/d"))
    assert "auto.create.topics.enable" not in props


def test_overrides_are_applied_last() -> None:
    nodes = _cluster(3)
    props = server_properties(
        nodes[0],
        nodes,
        log_dir=Path("/d"),
        overrides={"broker.session.timeout.ms": "9000", "num.partitions": "6"},
    )
    assert props["broker.session.timeout.ms"] == "9000"
    assert props["num.partitions"] == "6"


def test_render_writes_one_escaped_key_value_per_line() -> None:
    text = render({"log.dirs": "C:\\kafka\\data", "a": "x\ny"})
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["log.dirs=C:\\\\kafka\\\\data", "a=x\\ny"]


def test_cluster_ids_are_16_random_bytes_in_unpadded_urlsafe_base64() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
