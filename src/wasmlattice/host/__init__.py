"""The host: identity, labels, inventory, and the runner that joins a lattice."""
