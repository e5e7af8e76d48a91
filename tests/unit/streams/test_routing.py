"""Our partitioner picks exactly the partitions aiokafka's (and the Java client's) would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.routing import Murmur2Partitioner, PartitionRouter, partition_for

partition_lists = st.integers(min_value=1, max_value=64).map(lambda n: list(range(n)))


def _shard_key(key: bytes) -> bool:
    head, hashmark, shard = key.rpartition(b"#")
    return bool(hashmark and head and len(shard) <= 4 and shard.isdigit())


@given(key=st.binary(max_size=64), partitions=partition_lists)
def test_same_partition_as_aiokafka_for_every_key_but_a_limits_shard(
    key: bytes, partitions: list[int]
) -> None:
    if _shard_key(key):
        return  # spread on purpose: below
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert Murmur2Partitioner()(key, partitions, partitions) == expected
    assert partition_for(key, partitions) == expected


def test_pinned_partitions_do_not_move() -> None:
    # Pinned (computed with aiokafka 0.14): keys already on a topic must stay routed where
    # they are, whatever library computes the hash.
    keys = [b"", b"a", b"request-1", b"tenant-a|fake", b"foobar"]
    assert [partition_for(key, list(range(6))) for key in keys] == [3, 4, 1, 0, 0]


def test_unkeyed_records_go_to_an_available_partition() -> None:
    partitioner = Murmur2Partitioner()
    assert {partitioner(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert partitioner(None, [0, 1, 2], []) in {0, 1, 2}


def test_router_knows_no_owner_before_metadata_then_follows_the_partitioner() -> None:
    router = PartitionRouter()
    assert router.owner_of("tenant-a|fake") is None
    router.update([2, 0, 1])
    assert router.owner_of("tenant-a|fake") == partition_for(b"tenant-a|fake", [0, 1, 2])


@given(
    provider=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    shards=st.integers(1, 16),
    partitions=partition_lists,
)
def test_the_shards_of_a_limit_land_on_different_partitions(
    provider: str, shards: int, partitions: list[int]
) -> None:
    owners = {partition_for(f"{provider}#{i}".encode(), partitions) for i in range(shards)}
    assert len(owners) == min(shards, len(partitions))


def test_shards_that_murmur2_put_together_are_apart() -> None:
    default = DefaultPartitioner()
    keys = [b"fake#0", b"fake#1"]
    assert len({default(key, [0, 1], [0, 1]) for key in keys}) == 1  # the collision
    assert {partition_for(key, [0, 1]) for key in keys} == {0, 1}
    router = Murmur2Partitioner()
    assert {router(key, [0, 1, 2, 3, 4, 5], []) for key in keys} == {
        partition_for(key, list(range(6))) for key in keys
    }
