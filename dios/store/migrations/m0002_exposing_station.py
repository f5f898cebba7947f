"""Which console is exposing an image, so that start-up recovery on a database shared by
several consoles resets only its own interrupted exposures."""

SQL = """
ALTER TABLE images ADD COLUMN exposing_station TEXT NOT NULL DEFAULT '';
"""
