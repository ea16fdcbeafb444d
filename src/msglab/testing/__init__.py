"""Test support: session fixtures for the real servers (a pytest plugin) and container specs."""
