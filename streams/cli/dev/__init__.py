"""Developer tooling, not the product: the `dev`, `broker` and `bench` commands and their processes.

Only this package may import ``infra`` (broker launchers), ``providers.fake`` (the test double)
and ``schemas.tools``; ``lint-imports`` checks it (``[tool.importlinter]`` in pyproject.toml).
"""
