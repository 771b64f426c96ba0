"""The Celery side of ``bench/compare/redis.sh``: the tasks a Celery worker runs on the same
redis-server as procpool's host agents (another database number).

The broker and the result backend are both ``$CELERY_BENCH_REDIS`` (for example
``redis://127.0.0.1:6379/1``); JSON serializer, Celery's defaults otherwise. The worker is
started from this folder as
``celery -A celery_app worker -c 2 --pool prefork -O fair --without-gossip --without-mingle
--without-heartbeat``.
"""

import os
import time

from celery import Celery

URL = os.environ.get("CELERY_BENCH_REDIS", "redis://127.0.0.1:6379/1")

app = Celery("celery_app", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task
def noop(x):
    return x


def _hold_once(marker, seconds):
    """Marks its first run by writing ``marker`` (its pid in it) and holds for ``seconds``;
    a run that finds the marker (a run again) returns at once. The attempt number comes
    back."""
    if os.path.exists(marker):
        return 2
    tmp = marker + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, marker)
    time.sleep(seconds)
    return 1


@app.task
def hold_once(marker, seconds):
    """Celery's defaults: acknowledged when it starts, so a worker lost under it fails it."""
    return _hold_once(marker, seconds)


@app.task(acks_late=True, reject_on_worker_lost=True)
def hold_once_late(marker, seconds):
    """Acknowledged when it ends, and given back to the queue if its worker process dies:
    Celery's way of having it run again."""
    return _hold_once(marker, seconds)
