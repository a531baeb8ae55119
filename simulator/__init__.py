"""dncsim.simulator."""
