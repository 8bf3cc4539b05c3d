"""Reports for auditors, rendered from the collector's live data (the TOM evidence report)."""
