"""Fidelity tests: the emulator held against recordings of the real Azure Batch service."""
