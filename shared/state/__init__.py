"""Sync state kept in Azure Table Storage."""

from shared.state.store import ConcurrencyConflict, StateStore, SyncedState, Watermark, decode_key, encode_key

__all__ = ["ConcurrencyConflict", "StateStore", "SyncedState", "Watermark", "decode_key", "encode_key"]
