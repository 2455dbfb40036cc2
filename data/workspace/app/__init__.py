"""Command center application: reads db/command_center.db and config/*.ini."""
