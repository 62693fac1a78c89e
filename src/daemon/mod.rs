//! The daemon: wires config, drivers and cores together and owns shutdown.
