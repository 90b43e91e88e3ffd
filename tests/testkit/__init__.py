"""Helpers shared by the tests of every folder: databases, a running server and its stubs, the
money path's registry and actors, a server as a child process, TLS material, edge-case registries.

Imported as `testkit.<module>` from any test. That works because pytest puts tests/ on sys.path
(tests/conftest.py sits in a folder without __init__.py, and pytest's default "prepend" import
mode inserts such a folder); this package is the one place such shared helpers live.
"""
