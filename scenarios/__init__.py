"""dncsim.scenarios."""
