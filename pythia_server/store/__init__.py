"""The store: one record per LLM call and per session in SQLite (WAL, one writer thread).

:class:`Store` is what the gateway writes through (non-blocking); :class:`StoreReader`
reads a store file, also while a gateway writes it.
"""

from pythia_server.store.records import CallRecord, SessionRecord
from pythia_server.store.sqlite import Store, StoreReader

__all__ = ["CallRecord", "SessionRecord", "Store", "StoreReader"]
