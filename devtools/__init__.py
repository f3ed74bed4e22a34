"""Local equipment for tests and the demo: Azurite, a local Functions host shim, the demo itself.

Never deployed (``.funcignore``); never imported by ``shared/``.
"""
