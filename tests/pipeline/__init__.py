"""The pipeline tests (a package, so that test_suite.py here and in tests/report do not collide)."""
