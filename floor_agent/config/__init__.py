"""Configuration: the loader (every mistake as file:line: field: what was expected, with a
did-you-mean), the strict base model, and the audit-client section every agent role shares.

Each capability keeps its own section's models beside its code (`<capability>/config.py`);
floor_agent/roles/config.py names the model of each role's file and loads any of them."""

from floor_agent.config.loader import ConfigError, ConfigIssue, load_role, load_role_file

__all__ = ["ConfigError", "ConfigIssue", "load_role", "load_role_file"]
