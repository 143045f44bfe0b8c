"""pamd's test fixtures for this plugin's tests (``pamd_demo_store``)."""

from pamd.testing import pamd_demo_store

__all__ = ["pamd_demo_store"]
