"""`pix2seq serve`: answer TF Serving gRPC requests for a pushed model directory.

  pix2seq serve --model-base-path /serving/pix2seq [--model-name pix2seq] [--port 8500]

Flag names follow `tensorflow_model_server` where both have the option, so switching
to the real server (docs/SERVING.md) keeps the same values.
"""
import logging


def add_arguments(parser) -> None:
    parser.add_argument("--model-base-path", required=True,
                        help="directory holding <version>/saved_model.pb (the Pusher's push destination)")
    parser.add_argument("--model-name", default="pix2seq", help="name clients send in model_spec.name")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback; the server has no authentication)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    parser.add_argument("--workers", type=int, default=8, help="threads answering requests concurrently")
    parser.add_argument("--max-concurrent-rpcs", type=int, default=None,
                        help="requests in flight before new ones get RESOURCE_EXHAUSTED (default: no limit)")
    parser.add_argument("--max-message-mb", type=float, default=64.0,
                        help="largest gRPC request/response in MiB (larger: RESOURCE_EXHAUSTED)")
    parser.add_argument("--max-image-mb", type=float, default=20.0,
                        help="largest encoded image in MiB, 0 = no limit (larger: RESOURCE_EXHAUSTED)")
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000,
                        help="largest image height*width from its header, 0 = no limit (larger: RESOURCE_EXHAUSTED)")
    parser.add_argument("--max-batch", type=int, default=0, help="most images per request, 0 = no limit")
    parser.add_argument("--file-system-poll-wait-seconds", type=float, default=1.0,
                        help="how often to look for a newly pushed version; 0 = load once")
    parser.add_argument("--num-versions", type=int, default=1,
                        help="how many of the newest versions stay loaded (addressable by model_spec.version)")
    parser.add_argument("--grace-seconds", type=float, default=10.0,
                        help="on SIGTERM, how long in-flight requests may take to finish")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="serve a new version without first running it once (assets.extra/"
                             "tf_serving_warmup_requests, else a generated image)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from_args(args):
    """ServerConfig from parsed flags (validates ranges so a typo fails before binding)."""
    from serving import handlers, image_check
    from serving.server import ServerConfig

    for name in ("workers", "num_versions"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, received: {getattr(args, name)}")
    mib = 1024 * 1024
    limits = handlers.RequestLimits(
        images=image_check.ImageLimits(max_bytes=int(args.max_image_mb * mib), max_pixels=args.max_image_pixels),
        max_batch=args.max_batch,
    )
    return ServerConfig(
        model_base_path=args.model_base_path,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_message_bytes=int(args.max_message_mb * mib),
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        poll_seconds=args.file_system_poll_wait_seconds,
        num_versions=args.num_versions,
        limits=limits,
        grace_seconds=args.grace_seconds,
        warmup=args.warmup,
    )


def main(args) -> int:
    # a server's log: timestamps and --log-level for every logger (replaces the console's set-up)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    from serving.server import serve

    return serve(config_from_args(args))
