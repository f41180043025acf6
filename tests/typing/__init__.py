"""Files that mypy checks from tests/test_facade_typing.py (not pytest modules)."""
