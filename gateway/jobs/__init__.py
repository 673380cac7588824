"""The one background-work engine: claims with a lease and a fencing owner, retries, dead letters.

Every kind of background work (``deliver`` notices, ``explain`` decisions with the model-agnostic
explainer, and the kinds that come next: log sequencing, retention purge, report building) runs through
the same machine:

- the job is a row written in the caller's transaction (the outbox rule): nothing is enqueued after commit;
- a runner *claims* due rows (``claims.claim``: PostgreSQL ``FOR UPDATE SKIP LOCKED``, SQLite ``BEGIN
  IMMEDIATE``), writing its owner name and a lease expiry on them; a row whose lease ran out is due again;
- every result is written fenced by the claim (``claimed_by = owner`` and still due), so a runner that lost
  its lease writes nothing and a result is stored exactly once;
- a failure is retried on the kind's schedule, and after its last attempt (or a permanent failure) the row
  is dead: counted in ``/metrics`` and shown where the person looks, never silently dropped.

Modules: ``claims`` (claim, retry delays), ``base`` (the TaskKind interface, its settings and the
``KindRegistry`` of known kinds, built by ``create_app``), the kinds ``explain``, ``recourse`` and
``purge`` (``deliver`` is ``gateway/notifications/task.py``, ``sequence`` ``gateway/auditlog/sequencer.py``,
``batch`` ``gateway/batches/task.py``), ``runner`` (``gateway worker`` and the thread of ``gateway serve``),
``metrics``. This package never imports ``gateway.api``.
"""
