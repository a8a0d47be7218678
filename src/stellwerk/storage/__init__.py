"""Storage behind small protocols: the event log seam and its backends, the control plane."""
