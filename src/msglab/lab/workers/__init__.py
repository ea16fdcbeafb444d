"""The processes of a lab run, one module per role (separate OS processes: faults kill them).

``python -m msglab.lab.workers ROLE NAME RUN_ID``, the spec (``spec.WorkerSpec``) as JSON on
standard input. Roles:

* ``producer`` (``producer.py``): records a ``sending`` line per message before it sends and
  an outcome line after; under at-least-once retries what was not confirmed, with the same id.
  What "sent" means is the pattern's: ``direct``, the broker confirmed the publish;
  ``dual-write`` and ``outbox``, the business transaction committed.
* ``consumer`` (``consumer.py``): records each delivery, applies the effect (a row in
  PostgreSQL; under effectively-once through the idempotent consumer), then acks: evidence
  before effect before ack, so a killed worker leaves everything the checker needs.
* ``replayer`` and ``storage`` (``reader.py``): read as a second group (the topic after the run
  or alongside it, the replies of a request-reply run, or what the broker kept after a
  durability fault), recording what they get, with no effect.
* ``relay`` (``relay.py``): publishes the run's outbox rows.

Every line they write is formatted by ``msglab.lab.evidence``.
"""
