"""Simulated devices and worlds (USB bus, door hardware, readers, cards, fingerprint module,
floor network, cameras), each speaking the real protocol at the bottom of the stack so the
production drivers run unchanged against them. For the tests, the demo and the benchmarks:
no production module imports this package, so an installed role never loads it."""
