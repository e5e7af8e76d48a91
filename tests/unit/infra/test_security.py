"""A secured node: SASL listeners, SCRAM users at format time, the authorizer, and ACL requests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from infra.kafka.acls import (
    Acl,
    AclError,
    Operation,
    Pattern,
    Resource,
    allow_consume,
    allow_produce,
    create_acls,
)
from infra.kafka.cluster import KafkaCluster
from infra.kafka.node import KafkaNode
from infra.kafka.properties import NodeAddress, server_properties
from infra.kafka.security import AUTHORIZER, ScramUsers, secure_properties

USERS = ScramUsers({"admin": "admin-pw", "alice": "alice-pw"}, super_users=("admin",))
NODE = NodeAddress(node_id=1, port=9092, controller_port=9093, probe_port=9094)


def test_a_secured_node_has_sasl_client_and_controller_listeners_and_a_plain_probe() -> None:
    props = secure_properties(NODE, USERS)

    assert props["listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:9092,PROBE://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093"
    )
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:9092,PROBE://127.0.0.1:9094"
    assert props["listener.security.protocol.map"] == (
        "SASL_PLAINTEXT:SASL_PLAINTEXT,PROBE:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert (
        'username="admin" password="admin-pw"'
        in (props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"])
    )
    assert 'user_admin="admin-pw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["authorizer.class.name"] == AUTHORIZER
    assert props["allow.everyone.if.no.acl.found"] == "false"
    # The probe's principal (User:ANONYMOUS) is not a super user: it may only list brokers.
    assert props["super.users"] == "User:admin"


def test_secure_keys_replace_the_plaintext_ones_and_overrides_still_win(tmp_path: Path) -> None:
    node = KafkaNode(
        NODE, home=tmp_path / "n", java="java", lib=Path("/lib"), heap="256m", sasl=USERS
    )
    node.write_config([NODE], {"super.users": "User:admin;User:worker"})
    text = node.config_path.read_text()

    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9092," in text
    assert "PLAINTEXT://127.0.0.1:9092" not in text.replace("SASL_PLAINTEXT://", "")
    assert "super.users=User:admin;User:worker\n" in text
    assert "controller.quorum.voters=1@127.0.0.1:9093\n" in text


def test_users_are_created_when_storage_is_formatted(tmp_path: Path) -> None:
    node = KafkaNode(
        NODE, home=tmp_path / "n", java="java", lib=Path("/lib"), heap="256m", sasl=USERS
    )
    command = node.format_command("abc")

    scram = [command[i + 1] for i, arg in enumerate(command) if arg == "--add-scram"]
    assert scram == [
        "SCRAM-SHA-256=[name=admin,password=admin-pw]",
        "SCRAM-SHA-256=[name=alice,password=alice-pw]",
    ]
    node.data_path.mkdir(parents=True)
    (node.data_path / "meta.properties").write_text("cluster.id=abc\n")
    assert node.format_command("abc")[-1] == "--ignore-formatted"


def test_a_plaintext_node_is_unchanged() -> None:
    plain = NodeAddress(node_id=1, port=9092, controller_port=9093)

    assert plain.probe == ("127.0.0.1", 9092)
    assert NODE.probe == ("127.0.0.1", 9094)
    assert "authorizer.class.name" not in server_properties(plain, [plain], log_dir=Path("/d"))
    with pytest.raises(ValueError, match="probe port"):
        secure_properties(plain, USERS)


@pytest.mark.parametrize(
    ("users", "supers", "message"),
    [
        ({"admin": "pw"}, (), "at least one super user"),
        ({"alice": "pw"}, ("admin",), "without a password"),
        ({"admin": 'pw"; evil'}, ("admin",), "must match"),
        ({"ad,min": "pw"}, ("ad,min",), "must match"),
    ],
)
def test_bad_users_are_refused(
    users: dict[str, str], supers: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ScramUsers(users, super_users=supers)


def test_passwords_stay_out_of_the_repr() -> None:
    assert "pw" not in repr(USERS)
    assert "alice" in repr(USERS)
    assert USERS.admin == ("admin", "admin-pw")


def test_a_secured_cluster_gives_each_node_a_probe_port() -> None:
    nodes = KafkaCluster(nodes=3, sasl=USERS)._addresses()
    plain = KafkaCluster(nodes=1)._addresses()

    assert all(n.probe_port is not None for n in nodes)
    assert len({n.probe_port for n in nodes} | {n.port for n in nodes}) == 6
    assert plain[0].probe_port is None


class RecordingAdmin:
    def __init__(self, codes: list[int]) -> None:
        self.codes = codes
        self.sent: list[Any] = []

    async def _send_request(self, request: Any) -> Any:
        self.sent.append(request)

        class Response:
            creation_responses = [(self.codes.pop(0), "nope")]

        return Response()


def test_acl_helpers_send_one_create_acls_request_each() -> None:
    admin = RecordingAdmin([0, 0, 0, 0, 0])
    acls = allow_produce("alice", "t") + allow_consume("worker", "t", "g")
    asyncio.run(create_acls(admin, acls))  # type: ignore[arg-type]

    assert len(admin.sent) == 5
    first = admin.sent[0]
    assert (first._resource_type, first._resource_name, first._principal) == (
        Resource.TOPIC,
        "t",
        "User:alice",
    )
    assert (first._operation, first._permission_type, first._host) == (Operation.WRITE, 3, "*")
    assert first._resource_pattern_type_filter == Pattern.LITERAL
    assert Acl("User:worker", Operation.READ, Resource.GROUP, "g") in acls


def test_a_refused_acl_raises() -> None:
    admin = RecordingAdmin([31])
    with pytest.raises(AclError, match="error 31"):
        asyncio.run(create_acls(admin, allow_produce("alice", "t")[:1]))  # type: ignore[arg-type]
