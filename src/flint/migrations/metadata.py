"""Every table Flint defines, for Alembic and the schema check in the tests."""

from __future__ import annotations

import flint.accounts.models
import flint.apps.models
import flint.billing.models
import flint.commerce.models
import flint.common.credentials
import flint.common.events
import flint.common.idempotency
import flint.common.jobs
import flint.common.platform_keys
import flint.common.rate_limit_overrides
import flint.installs.models
import flint.webhooks.models  # noqa: F401 - imported for their tables
from flint.common.db import Base

metadata = Base.metadata
