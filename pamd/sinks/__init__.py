"""Alert sinks: where accepted alerts are delivered."""
