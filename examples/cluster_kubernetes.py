"""A whole survey on Kubernetes: a Dask cluster from the Dask operator, then `geoseg batch` on it.

    pip install dask-kubernetes     # and the Dask operator installed in the cluster
    python examples/cluster_kubernetes.py /data/survey --model /data/my_model --out-dir /data/results \\
        --image your-registry/geoseg:latest --workers 10

The image holds geoseg's environment; the paths are on a volume every pod mounts (``--volume-claim``,
mounted at /data). Each worker runs one thread (geoseg's forward passes are single-threaded, so results
do not depend on the layout). ``--local`` runs the same steps on a local Dask cluster: a dry run on one
machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def mount_shared_volume(spec: dict, claim: str) -> dict:
    """Mount the PersistentVolumeClaim ``claim`` at /data in every worker pod of a DaskCluster spec."""
    pod = spec["spec"]["worker"]["spec"]
    pod.setdefault("volumes", []).append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
    for container in pod["containers"]:
        container.setdefault("volumeMounts", []).append({"name": "data", "mountPath": "/data"})
    return spec


def start_cluster(args: argparse.Namespace):
    if args.local:
        from distributed import LocalCluster

        return LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
    from dask_kubernetes.operator import KubeCluster, make_cluster_spec  # pip install dask-kubernetes

    spec = make_cluster_spec(name="geoseg", image=args.image, n_workers=args.workers,
                             worker_command=["dask", "worker", "--nthreads", "1"])  # fmt: skip
    if args.volume_claim:
        mount_shared_volume(spec, args.volume_claim)
    return KubeCluster(custom_cluster_spec=spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="mosaics, folders, globs or list files, as for geoseg batch")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--image", default="your-registry/geoseg:latest")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--volume-claim", help="a PersistentVolumeClaim holding mosaics, model and outputs")
    parser.add_argument("--local", action="store_true", help="a local cluster instead of Kubernetes (a dry run)")
    args = parser.parse_args(argv)
    cluster = start_cluster(args)
    # the geoseg of the Python running this script, so the client and the workers share one environment
    command = [sys.executable, "-m", "geoseg", "batch", *args.inputs, "--model", args.model, "--out-dir", args.out_dir,
               "--scheduler", cluster.scheduler_address, "--resume", "--progress", "none"]  # fmt: skip
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
