"""What agents and the collector both speak: event, checkpoint and batch formats, request
signing, the credentials wire format, the typed Emit protocol and the event kinds.

Imports only itself (and floor_agent.common): both ends depend on it, it depends on neither."""
