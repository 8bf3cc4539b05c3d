"""floor-agent: security agents for secure production floors, reporting to one audit collector."""

__version__ = "0.1.0"
