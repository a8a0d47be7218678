"""The HTTP edge: the Starlette app, its routes, middleware and the OpenAPI document."""
