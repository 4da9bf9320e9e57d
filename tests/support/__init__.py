"""Test support: real servers on loopback and helpers shared by the tests."""
