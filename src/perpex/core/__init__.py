"""The pure, deterministic core of perpex: no clock, no environment, no I/O, no global random."""
