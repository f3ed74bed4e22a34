"""Emulator of Commerce headquarters' F&O OData service (``/data``) plus a business-events publisher.

Follows ``docs/protocol-notes.md`` §3 (F&O OData), §4 (business events) and the checklists §5.2 / §5.3.
Entry points: :func:`emulators.commerce.server.start_commerce` for tests and the demo, and
``python -m emulators.commerce`` to run it alone.
"""
