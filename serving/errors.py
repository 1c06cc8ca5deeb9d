"""Bad requests as gRPC status codes, the way TF Serving answers them.

Every check in the server raises `ServingError(code, message)`; the servicer turns it
into `context.abort(code, message)`. Codes follow TF Serving's C++ server
(`server_core.cc`, `predict_util.cc`, `get_model_*_impl.cc`) so a client written for
`tensorflow_model_server` sees the same codes from `pix2seq serve`:

| problem | code |
|---|---|
| model name missing from the ModelSpec / missing ModelSpec | INVALID_ARGUMENT |
| unknown model name or version | NOT_FOUND ("Servable not found for request: ...") |
| `version_label` set (labels are not configured) | INVALID_ARGUMENT |
| unknown signature name | FAILED_PRECONDITION ('Serving signature key "x" not found.') |
| extra or missing input alias, unknown output_filter alias | INVALID_ARGUMENT |
| wrong dtype or shape, empty batch | INVALID_ARGUMENT |
| bytes that are not a JPEG/PNG image, truncated image | INVALID_ARGUMENT |
| image over the configured byte or pixel limit | RESOURCE_EXHAUSTED (like gRPC's own message-size limit) |
| graph op error | the op error's canonical code (TF and gRPC share the numbering) |
"""
import grpc

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request the server refuses, with the gRPC status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def servable_not_found(model_name: str, version: int | None) -> ServingError:
    """TF Serving's wording for a model/version the manager does not hold."""
    request = f"Latest({model_name})" if version is None else f"Specific({model_name}, {version})"
    return not_found(f"Servable not found for request: {request}")


def from_op_error(error) -> ServingError:
    """A `tf.errors.OpError` raised while running a signature, with its own code.

    TensorFlow error codes are the canonical gRPC codes, so the mapping is the number.
    """
    code = _BY_NUMBER.get(getattr(error, "error_code", 2), grpc.StatusCode.UNKNOWN)
    message = getattr(error, "message", None) or str(error)
    return ServingError(code, message.strip())
