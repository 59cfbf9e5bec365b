"""Shards are the partitions: registered dynamically, so new data never needs a code change."""

from dagster import DynamicPartitionsDefinition

shards = DynamicPartitionsDefinition(name="shards")
