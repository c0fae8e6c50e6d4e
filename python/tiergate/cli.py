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

    clf = sub.add_parser("classifier", help="train and evaluate the learned request classifier")
    clf_sub = clf.add_subparsers(dest="classifier_command", metavar="SUBCOMMAND", required=True)
    tr = clf_sub.add_parser("train", help="train a quality model from labelled data")
    tr.add_argument("--data", required=True, help="directory of RouterBench CSVs / labelled JSONL")
    tr.add_argument("--out", required=True, help="model file to write (JSON)")
    tr.add_argument("--reference", default=None, help="reference model (default: most accurate)")
    tr.add_argument("--floor", type=float, default=None, help="accuracy floor to report")
    tr.add_argument("--tenant", default=None, help="train on this tenant's JSONL records only")
    tr.add_argument("--C", dest="c", type=float, default=0.25, help="inverse L2 strength (0.25)")
    ev = clf_sub.add_parser(
        "eval", help="route a labelled set with a model's stored operating point"
    )
    ev.add_argument("--model", required=True, help="model file")
    ev.add_argument("--data", required=True, help="directory of RouterBench CSVs / labelled JSONL")
    ev.add_argument("--reference", required=True, help="reference model")
    ev.add_argument("--floor", type=float, required=True, help="accuracy floor F")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--plot", default=None, help="PNG path (default: <model>.eval.png)")
    jn = clf_sub.add_parser("join", help="labelled records from request logs and scores")
    jn.add_argument("--requests", required=True, help="request log (JSON lines, log_text on)")
    jn.add_argument("--scores", required=True, help="JSON lines {request_id, score|agree}")
    jn.add_argument("--config", default=None, help="config mapping deployments to families")
    jn.add_argument("--out", required=True, help="labelled records (JSONL) to write")

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
    if args.command == "classifier":
        from tiergate.classifier import cli as clf

        if args.classifier_command == "train":
            return clf.train_main(
                args.data, args.out, args.reference, args.floor, args.tenant, args.c
            )
        if args.classifier_command == "eval":
            return clf.eval_main(
                args.model, args.data, args.reference, args.floor, args.json, args.plot
            )
        return clf.join_main(args.requests, args.scores, args.config, args.out)
    if args.command == "demo":
        from tiergate.demo import demo_main

        return demo_main(args.config)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
