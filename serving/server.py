"""A TF Serving–compatible gRPC server over a versioned model directory.

`tensorflow_model_server` cannot be installed here, so `pix2seq serve` answers the same
gRPC API (`tensorflow.serving.PredictionService` Predict / GetModelMetadata and
`tensorflow.serving.ModelService` GetModelStatus) over the same `<base>/<version>/`
layout the Pusher writes. Clients built on `tensorflow_serving.apis` stubs work against
either server unchanged. Requests run on a thread pool (TensorFlow releases the GIL
while a signature runs), new versions are picked up by polling, and SIGTERM drains
in-flight requests before exiting.
"""
import dataclasses
import logging
import signal
import threading
from concurrent import futures
from functools import partial

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving import errors, handlers
from serving.version_manager import VersionManager
from serving.warmup import warm_up

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything `pix2seq serve` can set.

    Args:
      model_base_path: directory with `<version>/saved_model.pb` (the Pusher's destination).
      model_name: the name clients send in `model_spec.name`.
      host: address to bind; loopback unless told otherwise (the server has no auth).
      port: gRPC port; 0 picks a free one (see `ModelServer.port`).
      workers: threads answering requests concurrently.
      max_message_bytes: largest request/response gRPC accepts (bigger: RESOURCE_EXHAUSTED).
      max_concurrent_rpcs: requests in flight before new ones get RESOURCE_EXHAUSTED; None: no limit.
      poll_seconds: how often to look for a newly pushed version; 0: never (load once).
      num_versions: newest versions kept loaded and addressable by `model_spec.version`.
      limits: image byte/pixel limits and batch limit checked before the graph runs.
      grace_seconds: on shutdown, how long in-flight requests may take to finish.
      warmup: run each new version once (its recorded warm-up requests, else a small
        image through the image-only signatures) before it takes traffic.
    """

    model_base_path: str
    model_name: str = "pix2seq"
    host: str = "127.0.0.1"
    port: int = 8500
    workers: int = 8
    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_rpcs: int | None = None
    poll_seconds: float = 1.0
    num_versions: int = 1
    limits: handlers.RequestLimits = handlers.RequestLimits()
    grace_seconds: float = 10.0
    warmup: bool = True


def _answer(handler, request, context, *args):
    """Run a handler; a ServingError becomes its status, anything else INTERNAL (server keeps going)."""
    try:
        return handler(*args, request)
    except errors.ServingError as e:
        failure = e
    except Exception as e:  # a bug must fail one request, never the server
        log.exception("unexpected error in %s", handler.__name__)
        failure = errors.ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
    log.debug("%s refused: %s", handler.__name__, failure)
    context.abort(failure.code, failure.message)


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED
    (the export has predict-method signatures only)."""

    def __init__(self, manager, limits):
        self._manager = manager
        self._limits = limits

    def Predict(self, request, context):
        return _answer(lambda m, r: handlers.predict(m, r, self._limits), request, context, self._manager)

    def GetModelMetadata(self, request, context):
        return _answer(handlers.model_metadata, request, context, self._manager)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (one model, no config file)."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):
        return _answer(handlers.model_status, request, context, self._manager)


class ModelServer:
    """The server object: `start()`, `port`, `stop()`; also a context manager.

    Example:
      with ModelServer(ServerConfig("/serving/pix2seq", port=0)) as server:
          client = Pix2SeqClient(f"127.0.0.1:{server.port}")
    """

    def __init__(self, config: ServerConfig, manager: VersionManager | None = None):
        self.config = config
        self.manager = manager or VersionManager(
            config.model_base_path,
            config.model_name,
            poll_seconds=config.poll_seconds,
            num_versions=config.num_versions,
            warmup=partial(warm_up, image_inputs=config.limits.image_inputs) if config.warmup else None,
        )
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="predict"),
            options=options,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self.manager, config.limits), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self.manager), self._server)
        self.port = None

    @property
    def address(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{host}:{self.port}"

    def start(self) -> "ModelServer":
        """Load the newest version (if any), bind, start answering and polling."""
        self.manager.start()
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.port = self._server.add_insecure_port(f"{host}:{self.config.port}")
        if not self.port:
            raise OSError(f"could not bind {host}:{self.config.port}")
        self._server.start()
        log.info(
            "serving %s (versions %s) from %s on %s",
            self.config.model_name,
            self.manager.served_versions() or "none yet",
            self.config.model_base_path,
            self.address,
        )
        return self

    def stop(self, grace: float | None = None) -> None:
        """Refuse new requests, let in-flight ones finish for up to `grace` seconds, stop polling."""
        grace = self.config.grace_seconds if grace is None else grace
        self._server.stop(grace).wait()
        self.manager.stop()

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(grace=0)


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT, then drain in-flight requests and return 0.

    Must run on the main thread (signal handlers).
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = ModelServer(config).start()
    print(f"pix2seq serve: model {config.model_name!r} on {server.address}", flush=True)
    try:
        while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
            pass
        log.info("shutting down: draining in-flight requests (up to %.0f s)", config.grace_seconds)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("pix2seq serve: stopped", flush=True)
    return 0
