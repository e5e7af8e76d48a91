"""Stateful tables with Faust-table semantics for the aiokafka loops: rocksdict plus changelog."""

from streams.state.recovery import PartitionRecovery, RecoveryError, RecoveryReport
from streams.state.table import ChangelogTable, PartitionNotAssignedError
from streams.state.topic import ensure_changelog_topic

__all__ = [
    "ChangelogTable",
    "PartitionNotAssignedError",
    "PartitionRecovery",
    "RecoveryError",
    "RecoveryReport",
    "ensure_changelog_topic",
]
