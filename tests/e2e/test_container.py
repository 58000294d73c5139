"""The Containerfile, checked without a container engine (none on these machines, and no base
images to pull): its build stage's commands run here on the host and what they produce is
what the run stage expects.

- The stage's `cargo build` is exactly the end-to-end harness's build (dataplane.py), so it
  runs here as a no-op and builds the same binaries with the same features.
- scripts/container-install lays out stripped binaries with a GNU debuglink, their split debug
  info, and the zlib that distroless `cc` lacks; the stripped binaries run, and need no shared
  library beyond those distroless `cc` has and the one copied.
- The run stage: a non-root numeric user, an exec-form entrypoint (no shell at run time), only
  files from the build stage's /out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import dataplane

ROOT = dataplane.ROOT
# What gcr.io/distroless/cc-debian12 provides (glibc, libgcc, OpenSSL 3), and the loader.
DISTROLESS_CC = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libgcc_s.so.1", "libssl.so.3",
                 "libcrypto.so.3", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
                 "libpthread.so.0", "libdl.so.2", "librt.so.1"}


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name, continuation lines joined, comments dropped."""
    text = (ROOT / "Containerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, list[tuple[str, str]]] = {}
    current = "args"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest)
            assert m, line
            current = m.group(2)
        out.setdefault(current, []).append((word, rest))
    return out


def harness_build_command() -> list[str]:
    src = (ROOT / "tests" / "e2e" / "dataplane.py").read_text()
    m = re.search(r'cmd = \[(.*?)\]', src, re.S)
    assert m
    return json.loads("[" + m.group(1).replace("\n", " ") + "]")


def test_the_build_stage_runs_here_and_the_run_stage_gets_what_it_needs(
    sluice_bins: Path, tmp_path: Path
) -> None:
    st = stages()
    assert set(st) >= {"build", "run"}, st.keys()
    runs = [rest for word, rest in st["build"] if word == "RUN"]
    cargo = [r for r in runs if r.startswith("cargo build")]
    assert len(cargo) == 1, runs
    argv = shlex.split(cargo[0])
    want = harness_build_command()
    assert [a for a in argv if a != "--locked"] == want, f"{argv} != {want}"
    if os.environ.get(dataplane.BIN_DIR_ENV):
        release = sluice_bins
    else:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        release = ROOT / "target" / "release"
    install = [r for r in runs if r.startswith("scripts/container-install")]
    assert len(install) == 1, runs
    out = tmp_path / "out"
    args = shlex.split(install[0])
    assert args[1:] == ["target/release", "/out"], args
    subprocess.run([str(ROOT / args[0]), str(release), str(out)], check=True, timeout=300)

    for name in ("dataplane", "config-agent"):
        binary = out / "bin" / name
        size = binary.stat().st_size
        assert size < 30 << 20, f"{name}: {size} bytes, not stripped?"
        assert (out / "debug" / f"{name}.debug").stat().st_size > size, "the debug info, split"
        sections = subprocess.run(["objdump", "-h", str(binary)], capture_output=True,
                                  text=True, check=True).stdout
        assert ".gnu_debuglink" in sections and ".debug_info" not in sections, name
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                 check=True).stdout
        assert version.startswith(f"{name} "), version
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                             check=True).stdout
        needed = {line.split()[0].rsplit("/", 1)[-1] for line in ldd.splitlines() if line.strip()}
        copied = {p.name for p in (out / "lib").iterdir()}
        assert needed <= DISTROLESS_CC | copied, f"{name} needs {needed - DISTROLESS_CC - copied}"

    run = st["run"]
    users = [rest for word, rest in run if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "a numeric non-root user"
    entry = [rest for word, rest in run if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/usr/local/bin/dataplane"], "exec form: no shell"
    copies = [rest for word, rest in run if word == "COPY"]
    assert copies and all(c.startswith("--from=build /out/") for c in copies), copies
    assert not [w for w, _ in run if w == "RUN"], "nothing runs in the run stage: it has no shell"
