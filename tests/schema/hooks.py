"""The module tests/schema/api_schema.py names in SCHEMATHESIS_HOOKS: it loads each hook module here."""

import ast_guard  # noqa: F401 (patches on import)
import idempotency_hooks  # noqa: F401 (registers its hook on import)
