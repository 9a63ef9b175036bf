"""Guest FIFO: insert at head, hits change nothing, victim = tail (list A): LRU's list
operations without its move on a hit."""

from __future__ import annotations

from balloonreplay.engine.guest_lru import lru_insert as fifo_insert
from balloonreplay.engine.guest_lru import lru_remove as fifo_remove
from balloonreplay.engine.guest_lru import lru_victim as fifo_victim

__all__ = ["fifo_insert", "fifo_remove", "fifo_victim"]
