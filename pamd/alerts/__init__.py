"""The alert pipeline's parts: preferences, decisions, and the book that remembers what was sent."""
