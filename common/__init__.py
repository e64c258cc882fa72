"""What every component shares: settings, event contract, bus topology, state store."""
