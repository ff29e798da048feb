"""The `replicate-jupyter` command. One subcommand for now: `serve`, a Cog worker for the pool."""
from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replicate-jupyter", description="replicate-jupyter tools")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a predictor over Cog's HTTP API (coglet, no Docker) for `%%replicate --on workers`",
        description="Serve PREDICTOR with Cog's own HTTP server (coglet): schema, health-check, SSE, "
                    "cancel. The server is restarted when it dies or turns unhealthy, and on the folder's edited "
                    "code before the next prediction (a running one finishes first). A folder with cog.yaml "
                    "runs from that folder with cog.yaml's environment, as under Cog. On any address but "
                    "loopback a worker token is required: set RJ_WORKER_TOKEN or give --token-file.",
        allow_abbrev=False,  # `--token VALUE` must not be taken for --token-file: no secrets in argv
    )
    serve.add_argument("predictor", metavar="PREDICTOR",
                       help="file.py:Class, a folder with cog.yaml, local/shapes, local/tiny-lm, hf:REPO_ID")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    serve.add_argument("--concurrency", type=int, default=1, metavar="K",
                       help="predictions at once (coglet slots; >1 needs an async predictor; "
                            "default cog.yaml's concurrency.max, else 1)")
    serve.add_argument("--name", default=None, metavar="OWNER/NAME",
                       help="model name the pool routes by (default local/<stem>)")
    serve.add_argument("--hardware", default=None, metavar="SKU",
                       help="price SKU for cost, e.g. gpu-a40-large (default: detected on this box)")
    serve.add_argument("--token-file", default=None, metavar="PATH",
                       help="file whose first line is the worker token clients must send as "
                            "'Authorization: Bearer <token>' (or set RJ_WORKER_TOKEN; never on the command line)")
    serve.add_argument("--insecure", action="store_true",
                       help="serve a non-loopback address without a token: anyone who reaches it runs predictions")
    serve.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                       help="let the predictor see this credential-looking variable of serve's environment "
                            "(*_TOKEN, *_KEY, *SECRET* are withheld otherwise; a cog.yaml may list its own)")
    serve.add_argument("--no-batching", action="store_true",
                       help="serve a model that declares batching one prediction per call, as plain Cog does "
                            "(by default its concurrent predictions run as batches)")
    serve.add_argument("--batch-window", type=float, default=None, metavar="S",
                       help="a batching model: seconds with no new prediction that close a batch (default 0.05)")
    serve.add_argument("--exit-with-stdin", action="store_true",
                       help="stop when stdin closes (for a parent process that starts serve and holds the pipe)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from replicate_jupyter.serve.server import Server
        from replicate_jupyter.serve.tokens import load_token

        try:
            token = load_token(args.token_file)
            server = Server(args.predictor, host=args.host, port=args.port, concurrency=args.concurrency,
                            name=args.name, hardware=args.hardware, token=token, insecure=args.insecure,
                            pass_env=args.pass_env, exit_with_stdin=args.exit_with_stdin,
                            batching=not args.no_batching, batch_window=args.batch_window)
        except Exception as exc:  # a bad reference (InputError included): our message, not a traceback
            print(f"replicate-jupyter serve: {exc}", file=sys.stderr)
            return 2
        try:
            return server.run()
        except Exception as exc:
            print(f"replicate-jupyter serve: {exc}", file=sys.stderr)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
