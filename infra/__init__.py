"""Launchers for the brokers that tests and local runs use: Apache Kafka and embedded Tansu."""
