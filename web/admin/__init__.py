"""The operator console: an aiohttp sub-app at /admin with its own sessions, templates and middleware."""
