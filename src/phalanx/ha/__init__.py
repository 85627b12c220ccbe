"""Coordinator failover through etcd (``phalanx serve --ha``): the election on a lease
whose leader key's create-revision is the fencing epoch (``election``), the committed
pointer and the fenced commit step (``pointer``, ``commit``), the gate that answers clients
while standing by (``gate``), the coordinator's terms (``deployment``), the commit log and
the history checker (``commitlog``, ``checker``), and a local etcd for tests and
benchmarks (``etcd_server``). See docs/failover.md.

Importing this package needs the ``[ha]`` extra (etcd3gw).
"""
