"""wasmlattice: a distributed WebAssembly component host."""

__version__ = "0.1.0"
