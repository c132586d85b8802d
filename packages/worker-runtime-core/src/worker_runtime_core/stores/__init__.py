"""Stores: the protocol the Runtime persists through, and the in-memory default."""

from .base import Batch, RuntimeStore, StoreHealth, StoreState, store_health
from .memory import MemoryStore

__all__ = ["Batch", "MemoryStore", "RuntimeStore", "StoreHealth", "StoreState", "store_health"]
