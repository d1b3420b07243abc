"""``python -m tools.tlsgen SCENARIO OUT.pcap``: write a scenario's capture and say what.

With ``--write-roots DIR`` the trust roots (``SCENARIO-roots.pem``), a policy using them and
the scenario's pins (``SCENARIO-policy.yaml``, JSON being YAML) and the ground truth
(``SCENARIO-truth.json``: per connection its endpoints, version, suite, SNI, chain SHA-256s,
DH size and expected rules; plus the expected rate alerts) are written there too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.tlsgen.pcap import Timing
from tools.tlsgen.scenarios import ALL_NAMES, Options, Scenario, build


def truth(scenario: Scenario) -> dict[str, object]:
    """The scenario's ground truth as JSON-ready data."""
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "connections": [
            {
                "client": f"{c.client[0]}:{c.client[1]}", "server": f"{c.server[0]}:{c.server[1]}",
                "start": c.start, "version": f"0x{c.version:04x}", "cipher": f"0x{c.cipher:04x}",
                "sni": c.sni, "chain_sha256": [hashlib.sha256(d).hexdigest() for d in c.chain],
                "dh_bits": c.dh_bits, "group": c.group, "established": c.established,
                "rules": sorted(c.rules), "maybe_rules": sorted(c.maybe_rules),
            }
            for c in scenario.connections
        ],
        "aggregates": [
            {"rule": a.rule, "server": f"{a.server[0]}:{a.server[1]}",
             "server_name": a.server_name, "window": list(a.window)}
            for a in scenario.aggregates
        ],
    }


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.tlsgen", description=__doc__)
    parser.add_argument("scenario", choices=ALL_NAMES)
    parser.add_argument("out", type=Path, help="the pcap to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, help="benchmark: total; steady-plus-burst "
                        "and handshake-failures: per minute; flood-*: the flood's size")
    parser.add_argument("--app-segments", type=int, help="full segments of server data after "
                        "each handshake")
    parser.add_argument("--concurrency", type=int, help="benchmark: connections open at once")
    parser.add_argument("--mss", type=int, default=1460)
    parser.add_argument("--packet-gap", type=float, default=0.0002,
                        help="seconds between a connection's packets")
    parser.add_argument("--write-roots", type=Path, metavar="DIR",
                        help="also write the roots PEM, a policy and the ground truth here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    options = Options(seed=args.seed, connections=args.connections,
                      app_segments=args.app_segments, concurrency=args.concurrency,
                      timing=Timing(packet_gap=args.packet_gap, mss=args.mss))
    scenario = build(args.scenario, options)
    stats = scenario.write(args.out)
    print(f"{args.out}: scenario {scenario.name} (seed {scenario.seed}): {stats.connections} "
          f"connections, {stats.packets} packets, {stats.bytes} bytes of frames")
    if args.write_roots is not None:
        directory: Path = args.write_roots
        directory.mkdir(parents=True, exist_ok=True)
        roots = directory / f"{scenario.name}-roots.pem"
        roots.write_bytes(scenario.roots_pem)
        policy = directory / f"{scenario.name}-policy.yaml"
        policy.write_text(json.dumps(scenario.policy(roots.resolve()), indent=2) + "\n")
        facts = directory / f"{scenario.name}-truth.json"
        facts.write_text(json.dumps(truth(scenario), indent=1) + "\n")
        print(f"{roots}: {len(scenario.roots)} trust root(s)\n{policy}: policy\n{facts}: "
              f"ground truth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
