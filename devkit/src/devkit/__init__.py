"""The development kit: throw-away servers on loopback (PostgreSQL, moto, Ceph RGW, Pushgateway),
a fault-injecting proxy, the chart's release rendered and its pods run as the kubelet would
(from the virtualenv or from the built image), a test corpus, and process statistics.

The tests (tests/), the demo and the benchmarks (scripts/) import it; scripts/setup.sh installs
it editable into .venv.
"""
