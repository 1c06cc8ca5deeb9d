"""Which versions are served: poll the base directory, load new versions, swap, unload old.

Same policy as TF Serving's default (`latest` N versions, availability preserving): a
newly pushed version is loaded completely in the background while the old one keeps
answering; only then is the serving map swapped, and versions that fell out of the
newest N are dropped. One difference: a version that fails to load (a half-copied or
broken push) is skipped in favour of the next older loadable one, where TF Serving would
serve nothing for it; the failure shows in GetModelStatus (state END with the error) and
the version is retried once its saved_model.pb changes. The serving map is replaced, never mutated, so a request that
already resolved its version keeps that model object until it finishes.
"""
import dataclasses
import logging
import threading
import time

from serving import errors, model_loader

log = logging.getLogger(__name__)

# tensorflow_serving.apis.get_model_status_pb2.ModelVersionStatus.State names.
LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclasses.dataclass(frozen=True)
class VersionState:
    state: str
    error: str = ""  # why a load failed (state END), empty otherwise


class VersionManager:
    """Serves the newest `num_versions` versions found under `base_path`.

    Args:
      base_path: directory holding `<version>/saved_model.pb`.
      model_name: the name clients put in `model_spec.name`.
      poll_seconds: how often to look for new versions (TF Serving's
        `--file_system_poll_wait_seconds`); 0 disables the polling thread.
      num_versions: how many of the newest versions stay loaded (TF Serving `latest { num_versions }`).
      loader: `(base_path, version) -> LoadedVersion`; replaceable for tests.
      warmup: `LoadedVersion -> int` run after loading and before the version serves
        (`serving.warmup.warm_up`; the count of answered requests is logged), or None to
        serve it cold.
    """

    def __init__(self, base_path, model_name, poll_seconds=1.0, num_versions=1, loader=model_loader.load_version,
                 warmup=None):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, received: {num_versions}")
        self.base_path = base_path
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.num_versions = num_versions
        self._loader = loader
        self._warmup = warmup
        self._serving = {}  # version -> LoadedVersion; replaced as a whole on every change
        self._states = {}  # version -> VersionState
        self._failed = {}  # version -> stamp of the saved_model.pb that failed to load
        self._poll_lock = threading.Lock()  # one poll at a time (loads can take seconds)
        self._state_lock = threading.Lock()  # guards _states only, so status never waits for a load
        self._stop = threading.Event()
        self._thread = None

    # -- lookups (any thread) ---------------------------------------------------------
    def get(self, version: int | None = None) -> model_loader.LoadedVersion:
        """The newest loaded version, or a specific one; NOT_FOUND otherwise."""
        serving = self._serving
        if version is None:
            if not serving:
                raise errors.servable_not_found(self.model_name, None)
            return serving[max(serving)]
        if version not in serving:
            raise errors.servable_not_found(self.model_name, version)
        return serving[version]

    def served_versions(self) -> list[int]:
        return sorted(self._serving)

    def states(self) -> dict:
        """version -> VersionState for every version this manager has seen."""
        with self._state_lock:
            return dict(self._states)

    def _set_state(self, version: int, state: VersionState) -> None:
        with self._state_lock:
            self._states[version] = state

    # -- polling ------------------------------------------------------------------------
    def poll_once(self) -> list[int]:
        """Bring the serving map in line with the directory; returns the served versions."""
        with self._poll_lock:
            loaded = dict(self._serving)
            keep = []
            for version in reversed(model_loader.scan_versions(self.base_path)):
                if len(keep) == self.num_versions:
                    break
                if version not in loaded:
                    model = self._load(version)
                    if model is None:  # broken push: fall back to the next older version
                        continue
                    loaded[version] = model
                keep.append(version)
            if keep:  # availability preserving: drop old versions only once a wanted one serves
                dropped = [v for v in loaded if v not in keep]
                loaded = {v: loaded[v] for v in keep}
            else:
                dropped = []
            self._serving = loaded
            for version in dropped:
                self._set_state(version, VersionState(END))
                log.info("unloaded %s version %d", self.model_name, version)
            return sorted(loaded)

    def _load(self, version):
        path = model_loader.version_path(self.base_path, version)
        try:
            stamp = model_loader.version_dir_stamp(path)
        except Exception:  # removed between scan and load
            return None
        if self._failed.get(version) == stamp:
            return None  # same files failed before; retry only after a re-push
        self._set_state(version, VersionState(LOADING))
        start = time.monotonic()
        warmed = ""
        try:
            model = self._loader(self.base_path, version)
            if self._warmup is not None:
                warmed = f", {self._warmup(model)} warm-up requests answered"
        except Exception as e:  # a broken or half-copied push must not stop serving
            self._failed[version] = stamp
            self._set_state(version, VersionState(END, f"{type(e).__name__}: {e}"))
            log.error("failed to load %s version %d from %s: %s", self.model_name, version, path, e)
            return None
        self._failed.pop(version, None)
        self._set_state(version, VersionState(AVAILABLE))
        log.info("loaded %s version %d in %.1f s%s", self.model_name, version, time.monotonic() - start, warmed)
        return model

    def start(self) -> None:
        """Load what is there now, then keep polling in a daemon thread."""
        self.poll_once()
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="version-poller", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # a flaky filesystem must not kill the poller
                log.exception("polling %s failed", self.base_path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
