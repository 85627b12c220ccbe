"""The embedded simulation: virtual clients on a virtual clock, with fault injection."""
