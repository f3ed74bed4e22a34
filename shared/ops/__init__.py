"""Operator surface: what operators read (``queries``, shared by the command line and the endpoints) and the
``/api/ops`` HTTP endpoints (``endpoints``, an Azure Functions Blueprint that ``function_app.py`` registers).
The actions themselves (replay, pause, resume) live in ``shared.sync.operations``."""
