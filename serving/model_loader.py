"""Find and load the versions of a model in TF Serving's directory layout.

The TFX Pusher (and anyone feeding `tensorflow_model_server`) writes one SavedModel per
version under a base directory: `<base>/<integer version>/saved_model.pb`. Like TF
Serving, only directories whose name is a non-negative integer and which hold a
`saved_model.pb` count as versions; anything else (a temporary copy, `.tmp-3`, a
README) is ignored.
"""
import dataclasses
import os

import tensorflow as tf

from model.signatures import read_signature_defs  # noqa: F401  (SignatureDefs as TF Serving reports them)

SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"


@dataclasses.dataclass(frozen=True)
class LoadedVersion:
    """One loaded version: callable signatures plus their SignatureDef protos.

    Holding a reference keeps the model alive, so a request that resolved a version
    finishes on it even if a newer version replaces it meanwhile.
    """

    version: int
    path: str
    signatures: dict  # name -> ConcreteFunction (keyword inputs by alias, dict outputs)
    signature_defs: dict  # name -> meta_graph_pb2.SignatureDef
    module: object = dataclasses.field(repr=False, compare=False)


def version_dir_stamp(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a version's saved_model.pb: changes when a version is re-pushed."""
    st = tf.io.gfile.stat(os.path.join(path, SAVED_MODEL_FILE))
    return st.mtime_nsec, st.length


def scan_versions(base_path: str) -> list[int]:
    """Versions present under `base_path`, ascending; [] when it does not exist (yet)."""
    try:
        names = tf.io.gfile.listdir(base_path)
    except tf.errors.NotFoundError:
        return []
    versions = []
    for name in names:
        name = name.rstrip("/")
        if name.isdigit() and tf.io.gfile.exists(os.path.join(base_path, name, SAVED_MODEL_FILE)):
            versions.append(int(name))
    return sorted(versions)


def version_path(base_path: str, version: int) -> str:
    """Directory of `version`; the Pusher names it by the bare integer."""
    return os.path.join(base_path, str(version))


def load_version(base_path: str, version: int) -> LoadedVersion:
    """Load one version completely (variables restored, signatures ready to call)."""
    path = version_path(base_path, version)
    signature_defs = read_signature_defs(path)
    module = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures = {name: fn for name, fn in module.signatures.items() if name in signature_defs}
    missing = sorted(set(signature_defs) - set(signatures))
    if missing:
        raise ValueError(f"{path}: signatures {missing} are in saved_model.pb but did not load")
    return LoadedVersion(version, path, signatures, signature_defs, module)
