"""An image built here from scratch with buildah (Debian's: no daemon, vfs storage, chroot
isolation, and no base image to pull), holding what the Containerfile's run stage holds:
scripts/container-install's output, the shared libraries distroless `cc` provides (copied from
this machine), the CA certificates, user 65532 and the exec-form entrypoint. Run as that user
it answers `--version` and validates an example's manifests: the layout works with nothing more.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import dataplane

ROOT = dataplane.ROOT


def test_an_image_from_scratch_runs_the_binaries(sluice_bins: Path, tmp_path: Path) -> None:
    if shutil.which("buildah") is None:
        raise dataplane.Failure("buildah not found: scripts/setup installs it (apt-get install buildah crun)")
    out = tmp_path / "out"
    subprocess.run([str(ROOT / "scripts" / "container-install"), str(sluice_bins), str(out)],
                   check=True, timeout=300)
    store = ["--root", str(tmp_path / "storage"), "--runroot", str(tmp_path / "run"),
             "--storage-driver", "vfs"]

    def buildah(*args: str) -> str:
        p = subprocess.run(["buildah", *store, *args], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"buildah {' '.join(args)}: {p.stderr}"
        return p.stdout.strip()

    ctr = buildah("from", "scratch")
    try:
        mnt = Path(buildah("mount", ctr))
        (mnt / "usr" / "local").mkdir(parents=True)
        shutil.copytree(out / "bin", mnt / "usr" / "local" / "bin")
        shutil.copytree(out / "lib", mnt / "usr" / "lib")
        # What distroless cc holds: glibc, libgcc_s, OpenSSL 3, the loader, CA certificates.
        for name in ("dataplane", "config-agent"):
            ldd = subprocess.run(["ldd", str(out / "bin" / name)], capture_output=True,
                                 text=True, check=True).stdout
            for line in ldd.splitlines():
                parts = line.split()
                path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
                if not path.startswith("/") or parts[0] == "libz.so.1":
                    continue
                dest = mnt / path.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(path).resolve(), dest)
        certs = mnt / "etc" / "ssl" / "certs"
        certs.mkdir(parents=True)
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", certs)
        shutil.copytree(ROOT / "examples", mnt / "examples")
        buildah("config", "--user", "65532:65532", "--entrypoint",
                json.dumps(["/usr/local/bin/dataplane"]), ctr)
        buildah("commit", ctr, "localhost/sluice-test:latest")
    finally:
        buildah("rm", ctr)
    run = buildah("from", "localhost/sluice-test:latest")
    try:
        config = json.loads(buildah("inspect", "--type", "container", run))
        assert config["OCIv1"]["config"]["User"] == "65532:65532"
        assert config["OCIv1"]["config"]["Entrypoint"] == ["/usr/local/bin/dataplane"]

        def inside(*argv: str) -> str:
            return buildah("run", "--isolation", "chroot", "--user", "65532:65532", run, "--", *argv)

        assert inside("/usr/local/bin/dataplane", "--version").startswith("dataplane ")
        assert inside("/usr/local/bin/config-agent", "--version").startswith("config-agent ")
        report = inside("/usr/local/bin/config-agent", "validate", "/examples/to-kafka",
                        "--local-broker", "localhost:1883", "--secrets-dir", "/examples/secrets")
        assert "valid: 0 error(s), 0 warning(s)" in report, report
    finally:
        buildah("rm", run)
        buildah("rmi", "--all", "--force")
