"""A local Apache Kafka cluster from Maven Central jars (needs `java`, and `mvn` once)."""

from infra.kafka.cluster import KafkaCluster
from infra.kafka.jars import KAFKA_VERSION, cache_dir, resolve_jars

__all__ = ["KAFKA_VERSION", "KafkaCluster", "cache_dir", "resolve_jars"]
