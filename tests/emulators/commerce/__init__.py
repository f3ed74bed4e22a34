"""Tests of the Commerce / F&O OData emulator and its business-events publisher."""
