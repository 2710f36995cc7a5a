"""The HTTP routes, one module per area; `app.create_app` includes every `router` listed in `ROUTERS`."""

from llmrec_platform.serving.routes import events, items, ops, query, users

ROUTERS = (users.router, events.router, query.router, items.router, ops.router)
