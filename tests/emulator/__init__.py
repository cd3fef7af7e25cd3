"""Tests of the Batch emulator, driven through the real azure-batch SDK."""
