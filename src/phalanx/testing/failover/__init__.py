"""A real failover group on one machine (``group``), a client driver that follows the
leader (``driver``), and the seeded random fault schedules over them (``runner``): the HA
tests and ``python -m benchmarks.failover`` use these."""
