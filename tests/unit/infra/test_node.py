"""The command lines one Kafka node runs, and finding Java."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import ToolMissing
from infra.kafka.node import LOG4J_CONFIG, KafkaNode, find_java
from infra.kafka.properties import NodeAddress


def _node(tmp_path: Path) -> KafkaNode:
    address = NodeAddress(node_id=1, port=9092, controller_port=9093)
    return KafkaNode(
        address, home=tmp_path / "node-1", java="/jdk/bin/java", lib=Path("/cache/lib"), heap="256m"
    )


def test_first_format_has_no_ignore_flag_and_a_restart_has_one(tmp_path: Path) -> None:
    node = _node(tmp_path)
    first = node.format_command("abc")
    assert first[-5:] == ["format", "-t", "abc", "-c", str(node.config_path)]
    assert "kafka.tools.StorageTool" in first

    node.data_path.mkdir(parents=True)
    (node.data_path / "meta.properties").write_text("cluster.id=abc\n")
    assert node.format_command("abc")[-1] == "--ignore-formatted"


def test_written_config_is_the_rendered_properties(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.write_config([node.address], {"num.partitions": "3"})
    text = node.config_path.read_text()
    assert "node.id=1\n" in text
    assert f"log.dirs={node.data_path}\n" in text
    assert text.endswith("num.partitions=3\n")
    assert node.logs_path.is_dir()


def test_format_and_server_share_the_jvm_logging_options(tmp_path: Path) -> None:
    command = _node(tmp_path).format_command("abc")
    assert command[0] == "/jdk/bin/java"
    assert f"-Dlog4j2.configurationFile={LOG4J_CONFIG}" in command
    assert "-Dlog4j2.shutdownHookEnabled=false" in command
    assert command[command.index("-cp") + 1] == "/cache/lib/*"


def test_java_home_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == str(java)


def test_no_java_is_one_line_with_an_operator_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing) as caught:
        find_java()
    assert "Operator action: install a Java 17+ runtime" in str(caught.value)
    assert "\n" not in str(caught.value)
