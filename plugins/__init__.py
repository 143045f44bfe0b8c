"""Built-in pamd monitors, loaded through the same hooks as third-party plugins."""
