"""The host's face to the lattice: control-interface server, provider health, and the composition root."""
