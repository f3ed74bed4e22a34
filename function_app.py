"""Azure Functions entry point: an index of triggers, one set per template file in ``mappings/``.

For each template: ``timer_<template>`` (Commerce -> Dataverse, on the file's schedule) and
``callback_<template>`` (POST /api/callbacks/<template>, Commerce business events). Plus
``callback_unknown_template``, which answers 404 for any other name. Logic lives in ``shared/``.
"""

import azure.functions as func

from shared.mapping.catalog import load_catalog
from shared.triggers import register_fallbacks, register_template

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for template in load_catalog():
    register_template(app, template)
register_fallbacks(app)
