"""The ``tiergate`` console script: one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tiergate import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiergate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tiergate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument("--port", type=int, default=None, help="traffic port (default 4000)")
    serve.add_argument("--admin-port", type=int, default=None, help="admin port (default 4001)")

    sim = sub.add_parser("sim", help="run the provider simulators named by a config")
    sim.add_argument("--config", required=True, help="YAML configuration file with a `sim` section")

    drift = sub.add_parser("drift", help="drift monitoring over the hourly aggregates")
    drift_sub = drift.add_subparsers(dest="drift_command", metavar="SUBCOMMAND", required=True)
    report = drift_sub.add_parser(
        "report", help="flag what moved out of bounds against the trailing baseline"
    )
    report.add_argument(
        "--aggregates", required=True, help="directory or s3://bucket/prefix of the aggregates"
    )
    report.add_argument(
        "--since", default="14d", help="days (14d) or hours (36h) to report on (default 14d)"
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.add_argument(
        "--prom-textfile",
        default=None,
        help="also write the latest day's flags for node_exporter's textfile collector",
    )

    demo = sub.add_parser("demo", help="simulators + sidecar + a short scenario, then a table")
    demo.add_argument("--config", default=None, help="config (default: the bundled sim config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "serve":
        from tiergate.server.main import serve_main

        return serve_main(args.config, args.port, args.admin_port)
    if args.command == "sim":
        from tiergate.sim.main import sim_main

        return sim_main(args.config)
    if args.command == "drift":
        from tiergate.drift.report import drift_main

        return drift_main(args.aggregates, args.since, args.json, textfile=args.prom_textfile)
    if args.command == "demo":
        from tiergate.demo import demo_main

        return demo_main(args.config)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
