"""The security staff's dashboard, served by the collector (server-rendered, no build step)."""
