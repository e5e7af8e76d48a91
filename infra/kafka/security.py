"""SASL/SCRAM and ACLs for a local node: listeners, users created at format time, the authorizer.

A secured node has three listeners:

- the client listener (the cluster's `bootstrap_servers`): SASL_PLAINTEXT with SCRAM-SHA-256,
  also used between brokers, as the first super user;
- CONTROLLER: SASL_PLAINTEXT with PLAIN (KRaft keeps SCRAM credentials in the metadata log,
  which the quorum itself cannot wait for), its one user the first super user;
- PROBE: PLAINTEXT on its own port, for the launcher's readiness probe (a Metadata request for
  no topics). Its principal, `User:ANONYMOUS`, has no ACL, so it can list brokers and nothing
  else: no topic is visible, writable or creatable through it.

`StandardAuthorizer` enforces ACLs with `allow.everyone.if.no.acl.found=false`: a user may do
only what an ACL (or `super.users`) grants. ACLs are created by a client (`infra.kafka.acls`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.kafka.properties import NodeAddress

MECHANISM = "SCRAM-SHA-256"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
CLIENT_LISTENER = "SASL_PLAINTEXT"
PROBE_LISTENER = "PROBE"
# Names and passwords go into JAAS lines and StorageTool arguments unquoted: keep them plain.
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class ScramUsers:
    """The SCRAM-SHA-256 users a secured cluster starts with, and which of them are super users.

    Args:
        users: name -> password; created in the metadata log when storage is formatted.
        super_users: names that bypass ACLs; the first one is what brokers and controllers
            authenticate as among themselves (the worker or an admin, never a publisher).
    """

    users: Mapping[str, str]
    super_users: tuple[str, ...] = ("admin",)
    _frozen_users: tuple[tuple[str, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for text in (*self.users, *self.users.values()):
            if not _PLAIN_TOKEN.match(text):
                raise ValueError(
                    f"SCRAM user names and passwords must match {_PLAIN_TOKEN.pattern}: {text!r}"
                )
        if not self.super_users:
            raise ValueError("a secured cluster needs at least one super user")
        missing = [name for name in self.super_users if name not in self.users]
        if missing:
            raise ValueError(f"super users without a password: {', '.join(missing)}")
        # A dict is mutable: keep an ordered copy so the value is really frozen.
        object.__setattr__(self, "_frozen_users", tuple(self.users.items()))

    def __repr__(self) -> str:  # passwords stay out of logs
        return f"ScramUsers(users={[n for n, _ in self._frozen_users]}, super={self.super_users})"

    @property
    def admin(self) -> tuple[str, str]:
        """The inter-broker and controller principal: the first super user and its password."""
        name = self.super_users[0]
        return name, dict(self._frozen_users)[name]

    def format_args(self) -> list[str]:
        """StorageTool `format` arguments creating every user (`--add-scram ...` per user)."""
        args: list[str] = []
        for name, password in self._frozen_users:
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args


def secure_properties(node: NodeAddress, sasl: ScramUsers) -> dict[str, str]:
    """server.properties keys that replace the PLAINTEXT listeners with SASL ones and turn the
    authorizer on (merged over `server_properties`)."""
    if node.probe_port is None:
        raise ValueError(f"node {node.node_id} needs a probe port to be secured")
    admin, password = sasl.admin
    host = node.host
    client = f"{CLIENT_LISTENER}://{host}:{node.port}"
    probe = f"{PROBE_LISTENER}://{host}:{node.probe_port}"
    scram_login = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{admin}" password="{password}";'
    )
    plain_login = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{password}" user_{admin}="{password}";'
    )
    return {
        "listeners": f"{client},{probe},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"{client},{probe}",
        "listener.security.protocol.map": f"{CLIENT_LISTENER}:SASL_PLAINTEXT,"
        f"{PROBE_LISTENER}:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": CLIENT_LISTENER,
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.{CLIENT_LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": (
            scram_login
        ),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain_login,
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{name}" for name in sasl.super_users),
    }
