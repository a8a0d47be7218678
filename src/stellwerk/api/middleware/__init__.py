"""Pure ASGI middleware of the HTTP service, one module per concern."""
