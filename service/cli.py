"""The `modellens` command: train a model, profile it, serve it, send it traffic."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _train(args: argparse.Namespace) -> int:
    from service.artifact.card import CARD_FILE
    from service.artifact.datasets import DatasetError, load_bundled, load_csv
    from service.artifact.training import train

    if args.data and args.dataset:
        print("error: --dataset and --data each name the training data; give one", file=sys.stderr)
        return 2
    if (args.features or args.drop) and not args.data:
        print("error: --features and --drop choose columns of a CSV: they need --data", file=sys.stderr)
        return 2
    dataset_name = args.dataset or "diabetes"
    name = args.name or (Path(args.data).stem if args.data else dataset_name)
    output = Path(args.output) if args.output else Path("models") / name
    if (output / CARD_FILE).exists():
        if args.if_missing:
            print(f"model already trained at {output}; skipping (--if-missing)")
            return 0
        if not args.force:
            print(f"error: {output} already holds a model; --force replaces it, --if-missing keeps it", file=sys.stderr)
            return 2
    try:
        if args.data:
            if not args.target:
                print("error: --data needs --target COLUMN", file=sys.stderr)
                return 2
            dataset = load_csv(
                Path(args.data),
                args.target,
                task=args.task,
                features=_names(args.features),
                drop=_names(args.drop) or (),
            )
        else:
            dataset = load_bundled(dataset_name)
        print(f"training {name} on {dataset.name} ({len(dataset.frame)} rows, {dataset.task})...", flush=True)
        card = train(dataset, output=output, name=name, seed=args.seed)  # the split can refuse the data too
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in card.metrics.items())
    print(f"trained {card.name} version {card.version} ({card.task}, {len(card.features)} features) -> {output}")
    print(f"holdout: {metrics}; training took {card.training_duration_seconds:.3f}s")
    return 0


def _names(option: str | None) -> list[str] | None:
    return None if option is None else [name.strip() for name in option.split(",") if name.strip()]


def _profile(args: argparse.Namespace) -> int:
    import pandas as pd

    from service.artifact.model import ModelLoadError, load_model
    from service.artifact.profile import build_profile
    from service.artifact.training import to_matrix

    try:
        model = load_model(Path(args.model))
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        frame = pd.read_csv(args.data)
    except (OSError, ValueError) as error:
        print(f"error: cannot read {args.data}: {error}", file=sys.stderr)
        return 2
    card = model.card
    absent = [name for name in card.feature_names if name not in frame.columns]
    if absent:
        print(f"error: {args.data} lacks the model's feature columns {absent}", file=sys.stderr)
        return 2
    for spec in card.features:
        if spec.type == "categorical":
            frame[spec.name] = frame[spec.name].map(lambda value: value if pd.isna(value) else str(value))
    rows = to_matrix(frame, card)
    targets = frame[card.target].to_numpy() if card.target in frame.columns else None
    profile = build_profile(card, rows, model.predict_array(rows), targets=targets, bins=args.bins)
    path = profile.save(Path(args.model))
    print(f"profiled {len(rows)} rows of {args.data} for {card.name} {card.version} -> {path}")
    if targets is None:
        print(f"no {card.target!r} column: label drift stays off until the profile includes the target")
    print(f"slice candidates: {', '.join(profile.slices) or 'none'}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _loadgen(args: argparse.Namespace) -> int:
    from service.rehearsal.loadgen import main_from_args
    from service.web.auth import AuthError, read_tokens

    args.token = None
    if args.token_file:
        try:
            args.token = read_tokens(Path(args.token_file))[0]  # the same file format the service reads
        except AuthError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return main_from_args(args)


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "MODELLENS_HOST": args.host,
        "MODELLENS_PORT": args.port,
        "MODELLENS_WORKERS": args.workers,
        "MODELLENS_THREADS": args.threads,
        "MODELLENS_MODEL_DIR": args.model,
    }
    env = dict(os.environ)
    env.update({key: str(value) for key, value in overrides.items() if value is not None})
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:service.web.gunicorn_conf"]
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover - execve does not return


def _triage(args: argparse.Namespace) -> int:
    from service.triage import main as triage

    return triage(args)


def _parser() -> argparse.ArgumentParser:
    from service.artifact.datasets import BUNDLED

    parser = argparse.ArgumentParser(prog="modellens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fit a model and write its model directory")
    train.add_argument("--dataset", choices=BUNDLED, help="a dataset bundled with scikit-learn (default: diabetes)")
    train.add_argument("--data", help="a CSV file of your own (needs --target)")
    train.add_argument("--target", help="the CSV column to predict")
    train.add_argument("--task", choices=("regression", "classification"), help="default: inferred from the target")
    columns = train.add_mutually_exclusive_group()
    columns.add_argument("--features", help="comma-separated CSV columns to train on (default: all but the target)")
    columns.add_argument("--drop", help="comma-separated CSV columns that are not features: ids, leaks (default: none)")
    train.add_argument("--name", help="model name (default: the dataset or file name)")
    train.add_argument("--output", help="model directory (default: models/<name>)")
    train.add_argument("--seed", type=int, default=0, help="seed of the holdout split and the estimator (default: 0)")
    existing = train.add_mutually_exclusive_group()
    existing.add_argument("--if-missing", action="store_true", help="do nothing if the model directory has a card")
    existing.add_argument("--force", action="store_true", help="replace a model already in the model directory")
    train.set_defaults(handler=_train)

    profile = commands.add_parser("profile", help="compute a model's reference profile from its training data")
    profile.add_argument("--model", required=True, help="model directory")
    profile.add_argument("--data", required=True, help="CSV with the model's feature columns (the training data)")
    profile.add_argument("--bins", type=int, default=10, help="quantile bins per numeric feature (default: 10)")
    profile.set_defaults(handler=_profile)

    loadgen = commands.add_parser("loadgen", help="send traffic with incident scenarios to a running service")
    loadgen.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL (default: %(default)s)")
    loadgen.add_argument(
        "--scenario",
        default="steady",
        help="steady, drift, latency-spike, bad-input, feedback, label-drift (with feedback), or several "
        "comma-separated (default: %(default)s)",
    )
    loadgen.add_argument(
        "--duration", type=float, default=60.0, help="seconds (default: %(default)s; ignored with --schedule)"
    )
    loadgen.add_argument(
        "--schedule", help="phases, e.g. steady:300,drift+feedback:300 (default for compose: see docs)"
    )
    loadgen.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        help="run the --schedule this many times (default: %(default)s; compose: 144, a day)",
    )
    loadgen.add_argument("--rate", type=float, default=10.0, help="requests per second (default: %(default)s)")
    loadgen.add_argument("--batch", type=int, default=1, help="rows per request (default: %(default)s)")
    loadgen.add_argument("--concurrency", type=int, default=8, help="requests in flight at most (default: %(default)s)")
    loadgen.add_argument("--drift-features", help="comma-separated features to shift (default: first two numeric)")
    loadgen.add_argument(
        "--drift-shift", type=float, default=1.5, help="standard deviations at the end of drift (default: %(default)s)"
    )
    loadgen.add_argument(
        "--spike-fraction", type=float, default=0.3, help="share of requests slowed in a spike (default: %(default)s)"
    )
    loadgen.add_argument(
        "--spike-delay", type=float, default=0.5, help="seconds each slowed request waits (default: %(default)s)"
    )
    loadgen.add_argument(
        "--bad-fraction", type=float, default=0.2, help="share of bad requests in bad-input (default: %(default)s)"
    )
    loadgen.add_argument(
        "--feedback-delay", type=float, default=5.0, help="seconds before ground truth is sent (default: %(default)s)"
    )
    loadgen.add_argument(
        "--label-noise", type=float, default=0.1, help="noise on the reported ground truth (default: %(default)s)"
    )
    loadgen.add_argument(
        "--seed", type=int, help="seed of the generated rows and timing (default: a fresh one each run)"
    )
    loadgen.add_argument(
        "--token-file",
        help="send the file's first token as a bearer token, for a service with MODELLENS_AUTH_TOKENS_FILE "
        "(default: none; an empty value sends none)",
    )
    loadgen.add_argument("--json", action="store_true", help="print the summary as JSON")
    loadgen.add_argument("--quiet", action="store_true", help="no progress lines")
    loadgen.set_defaults(handler=_loadgen)

    serve = commands.add_parser("serve", help="serve a model with gunicorn (settings: MODELLENS_* variables)")
    serve.add_argument("--host", help="address to listen on (MODELLENS_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (MODELLENS_PORT; default 8000)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (MODELLENS_WORKERS)")
    serve.add_argument("--threads", type=int, help="threads per worker (MODELLENS_THREADS)")
    serve.add_argument("--model", help="model directory (MODELLENS_MODEL_DIR)")
    serve.set_defaults(handler=_serve)

    from service.triage.options import add_arguments as triage_arguments

    triage = commands.add_parser(
        "triage", help="incident report: worst latency window, its exemplar traces, their slowest stage and logs"
    )
    triage_arguments(triage)
    triage.set_defaults(handler=_triage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
