"""The maintenance monitor's inputs and alerts on the Supabase store equal the SQLite store's: the Postgres store's
comparison tests of tests/test_store_pg_maintenance.py run again here, with the ``pg`` fixture
(tests/supabase_pairs.py) handing them a :class:`~pamd.store.supabase.SupabaseStore` on the fake PostgREST
(tests/fakes/postgrest.py, backed by the test's own Postgres schema): the same demo data and bad rows give the same
records, ``skipped_rows`` and alerts."""

from __future__ import annotations

import pytest

from tests import test_store_pg_maintenance as source
from tests.supabase_pairs import comparison_tests, pg, postgrest, supabase

__all__ = ["pg", "postgrest", "supabase"]  # fixtures, used by name

pytestmark = pytest.mark.anyio

globals().update(comparison_tests(source))
