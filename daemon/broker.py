"""The Redis transport of the cluster's Celery app: kombu's own, except that a message it cannot read is
dropped and said, instead of ending every worker that takes it.

A queue is a Redis list anyone with the password can push to; kombu reads each entry as a JSON envelope, and an
entry that is not one (``redis-cli lpush polishd garbage``) raised out of the worker's event loop: every worker
logged "Unrecoverable error" and exited 0, which systemd's ``Restart=on-failure`` does not restart.  The entry
has left the list by then (BRPOP/RPOP took it): dropping it loses nothing a coordinator sent.
"""

from __future__ import annotations

from queue import Empty

import structlog
from kombu.transport import redis as kombu_redis

log = structlog.get_logger("polishd.broker")

# What reading a malformed entry raises: JSON that does not parse, or parses into something that is no envelope.
MALFORMED = (ValueError, KeyError, TypeError, AttributeError, IndexError)


def _dropped(exc: BaseException) -> None:
    log.error("a message on the queue that is not a task was dropped", error=f"{type(exc).__name__}: {exc}"[:300])


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except MALFORMED as exc:
            _dropped(exc)
            return True  # an entry was taken off the queue: the loop goes on to the next

    def _get(self, queue):
        try:
            return super()._get(queue)
        except MALFORMED as exc:
            _dropped(exc)
            raise Empty() from None


class Transport(kombu_redis.Transport):
    Channel = Channel
