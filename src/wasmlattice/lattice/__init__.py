"""The lattice layer: wasmCloud v1 control-interface subjects, wire models and CloudEvents."""
