"""Dataverse Web API emulator (docs/protocol-notes.md §2, checklist §5.1).

Usage::

    from emulators.dataverse.server import start_dataverse
    emu = start_dataverse(port=0)          # a started server
    emu.url, emu.api_url                   # http://127.0.0.1:<port>, .../api/data/v9.2/
    emu.stop()

Command line: ``python -m emulators.dataverse --port 8801``.
"""
