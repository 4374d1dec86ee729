//! Endpoint and region health (filled in by the health-probing issue).
