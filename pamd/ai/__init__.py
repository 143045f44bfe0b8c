"""AI phrasing of alerts: providers, routing with fallback, grounding checks, cost control (DESIGN.md section 9)."""
