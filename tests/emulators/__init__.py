"""Tests of the local emulators."""
