"""Helpers shared by the stages: storage with I/O accounting, Spark sessions and chunk plans,
four-vector formulas, metrics files and errors."""
