"""Fixtures for the tests that run the real local model (see tests/test_local_model.py)."""
