"""The lab's ``table-cdc`` pattern on the real servers: the producer commits only its business
rows (``lab_orders``, no outbox), Debezium streams their changes, the lab consumer decodes each
change into the message that was sent (the row's ``message_id``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msglab.errors import UsageError
from msglab.lab.scenario import Scenario
from tests.lab.test_runs import jsonl, lab

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.connect]


def test_every_committed_row_arrives_once_in_commit_order_as_the_message_sent(
    tmp_path: Path,
) -> None:
    r = lab(tmp_path, transport="kafka", pattern="table-cdc", messages=600, rate=600)
    assert r["confirmed"] == 600 and r["lost"] == 0 and r["unexpected"] == 0
    assert r["reordered"] == 0 and r["duplicate_deliveries"] == 0
    delivered = {d["id"] for d in jsonl(Path(r["evidence_dir"]), "deliveries")}
    sent = {s["id"] for s in jsonl(Path(r["evidence_dir"]), "sends")}
    assert delivered == sent  # the checker saw the ids the producer sent, not change ids


def test_table_cdc_needs_kafka_and_the_single_broker() -> None:
    with pytest.raises(UsageError, match="table-cdc pattern publishes through Kafka Connect"):
        Scenario(transport="rabbitmq", pattern="table-cdc")
    with pytest.raises(UsageError, match="table-cdc pattern's Kafka Connect"):
        Scenario(transport="kafka", pattern="table-cdc", cluster=True)
