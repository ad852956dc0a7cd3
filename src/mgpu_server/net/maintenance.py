"""The master's housekeeping that is not state: the history's purge."""

from __future__ import annotations

import asyncio
import logging
import time

from mgpu_core.errors import StorageError
from mgpu_server.storage.history import PURGE_BATCH
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


async def purge_history(store: Store, retention_s: float) -> None:
    """Hourly (and at start): jobs past the history's retention leave the database, a batch
    at a time so the loop serves everyone in between. A failure is logged and tried again
    the next hour: nothing waits on it."""
    while True:
        before_s = time.time() - retention_s
        try:
            while store.purge_finished(before_s) >= PURGE_BATCH:
                await asyncio.sleep(0)
        except StorageError as err:
            log.error("history purge: %s", err.message)
        await asyncio.sleep(PURGE_INTERVAL_S)
