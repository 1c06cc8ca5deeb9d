"""Installing the locked dependency set into a fresh venv: pip against uv, cold caches.

  python3.10 bench/install.py [--python python3.10] [--keep]

What `make venv` does once per machine (and CI on every run): create a Python 3.10 venv,
bring pip, wheel and setuptools up to date, then install `requirements.lock`. For each
installer, a new venv and an empty cache directory in a temporary directory, so every
package is downloaded (and every sdist built) again; the two runs go one after the other
in this process, so they see the same machine and network. Prints seconds and the ratio,
and checks that both venvs hold exactly the pins of the lock.
"""
import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, "requirements.lock")
UV = "uv==0.13.8"  # the Makefile's


def pins(lines):
    out = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def install(kind, python, work):
    venv, cache = os.path.join(work, kind), os.path.join(work, kind + "-cache")
    env = dict(os.environ, PIP_CACHE_DIR=cache, UV_CACHE_DIR=cache)
    py = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-m", "venv", venv], check=True)
    started = time.time()
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip", "wheel", "setuptools<76", UV],
                   check=True, env=env)
    if kind == "uv":
        subprocess.run([py, "-m", "uv", "pip", "install", "-q", "--compile-bytecode", "--python", py, "-r", LOCK],
                       check=True, env=env)
    else:
        subprocess.run([py, "-m", "pip", "install", "-q", "-r", LOCK], check=True, env=env)
    seconds = time.time() - started
    frozen = subprocess.run([py, "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    return seconds, pins(frozen.splitlines())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.10")
    parser.add_argument("--keep", action="store_true", help="keep the venvs and caches")
    args = parser.parse_args(argv)
    with open(LOCK) as f:
        locked = pins(f)
    work = tempfile.mkdtemp(prefix="bench_install_")
    try:
        rows = {}
        for kind in ("pip", "uv"):
            seconds, installed = install(kind, args.python, work)
            extra = {k: v for k, v in installed.items() if locked.get(k) != v and k != "uv"}
            missing = sorted(set(locked) - set(installed))
            rows[kind] = (seconds, extra, missing)
            print(f"{kind}: {seconds:.0f} s; not the lock: {extra or 'none'}; missing: {missing or 'none'}", flush=True)
        print(f"\n| installer | seconds | vs pip |\n|---|---:|---:|")
        for kind, (seconds, _, _) in rows.items():
            print(f"| {kind} | {seconds:.0f} | {rows['pip'][0] / seconds:.1f}x |")
        print(f"\n{len(locked)} pinned packages; {os.cpu_count()} x {platform.processor() or platform.machine()}; "
              f"1-minute load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
