"""Create ACLs on a secured cluster from Python: aiokafka's admin client has no `create_acls`,
but its protocol module has the CreateAcls request, which this sends as a super user."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest


class Resource(enum.IntEnum):
    """Kafka's ResourceType codes."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Operation(enum.IntEnum):
    """Kafka's AclOperation codes."""

    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


class Pattern(enum.IntEnum):
    """Kafka's PatternType codes: a resource name matched exactly, or as a prefix."""

    LITERAL = 3
    PREFIXED = 4


_ALLOW = 3  # AclPermissionType.ALLOW


class AclError(Exception):
    """The broker refused to create an ACL."""


@dataclass(frozen=True)
class Acl:
    """Allow `principal` (e.g. `User:alice`) to do `operation` on a resource, from any host."""

    principal: str
    operation: Operation
    resource: Resource
    name: str
    pattern: Pattern = Pattern.LITERAL


def allow_produce(user: str, topic: str) -> list[Acl]:
    """What a producer needs on one topic: Write and Describe (metadata)."""
    return [
        Acl(f"User:{user}", Operation.WRITE, Resource.TOPIC, topic),
        Acl(f"User:{user}", Operation.DESCRIBE, Resource.TOPIC, topic),
    ]


def allow_consume(user: str, topic: str, group: str) -> list[Acl]:
    """What a consumer in `group` needs to read one topic."""
    return [
        Acl(f"User:{user}", Operation.READ, Resource.TOPIC, topic),
        Acl(f"User:{user}", Operation.DESCRIBE, Resource.TOPIC, topic),
        Acl(f"User:{user}", Operation.READ, Resource.GROUP, group),
    ]


async def create_acls(admin: AIOKafkaAdminClient, acls: Iterable[Acl]) -> None:
    """Create `acls`, one request each (aiokafka's request builder takes one), on a started
    admin client authenticated as a super user.

    Raises:
        AclError: the broker answered an error code for one of them.
    """
    for acl in acls:
        request = CreateAclsRequest(
            acl.resource, acl.name, acl.pattern, acl.principal, "*", acl.operation, _ALLOW
        )
        response = await admin._send_request(request)  # no public create_acls in aiokafka 0.14
        _raise_on_error(acl, response.creation_responses)


def _raise_on_error(acl: Acl, results: Sequence[Any]) -> None:
    for code, message in results:
        if code != 0:
            raise AclError(f"creating {acl} failed: error {code} {message or ''}".rstrip())
