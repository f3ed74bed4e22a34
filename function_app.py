"""Azure Functions entry point: an index of triggers, one set per template file in ``mappings/``.

For each template: ``timer_<template>`` (Commerce -> Dataverse scan, on the file's schedule),
``timer_inbound_<template>`` (Dataverse change tracking -> Commerce, on ``reverse_schedule``),
``callback_<template>`` (POST /api/callbacks/<template>: validate a business event and queue it) and
``worker_<template>`` (queue trigger: re-read the record from Commerce and write it); an aggregate template
(``"kind": "aggregate"``, the points balances) has ``timer_incremental_<template>`` (recent lines and due cards)
and a one-way template no inbound work. Once:
``callback_unknown_template`` (404 for any other name), ``timer_retry_parked`` (retries parked records),
``timer_refresh_pending`` (starts the pending template refreshes that are due),
``timer_telemetry_sample`` (the backlog gauges' storage sample) and ``ops_*`` (operator endpoints under
/api/ops, admin key: the Blueprint in ``shared/ops/endpoints.py``). Logic lives in ``shared/``. Telemetry is
exported to Azure Monitor when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set (``shared/telemetry/setup.py``);
the Azure SDK logs at ``SYNC_AZURE_SDK_LOG_LEVEL`` (default WARNING).
"""

import azure.functions as func

from shared.mapping.catalog import load_catalog
from shared.ops.endpoints import bp as ops_endpoints
from shared.telemetry.setup import configure as configure_telemetry
from shared.telemetry.setup import configure_azure_sdk_logging
from shared.triggers import register_shared, register_template

configure_azure_sdk_logging()  # the SDK's per-request HTTP lines at WARNING unless SYNC_AZURE_SDK_LOG_LEVEL says
configure_telemetry()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for template in load_catalog():
    register_template(app, template)
register_shared(app)
app.register_functions(ops_endpoints)
