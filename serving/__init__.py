"""Serving: TF Serving compatible gRPC server, client, configs."""
import pix2seq  # noqa: F401  (Keras 3 guard, see pix2seq/__init__.py)
