"""The test suite. A package so that test modules import shared helpers as `tests.support...`."""
