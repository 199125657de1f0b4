"""A whole survey on a SLURM cluster: start Dask workers as SLURM jobs, then run `geoseg batch` on them.

    pip install dask-jobqueue
    python examples/cluster_slurm.py survey/ --model my_model --out-dir results --jobs 20 [--gpu]

Each SLURM job is one Dask worker with one core and one thread (geoseg's forward passes are
single-threaded, so results do not depend on the layout); with ``--gpu`` each job asks for a GPU and
the batch runs with ``--device cuda``. Workers need the same geoseg environment and the same paths
(shared storage). ``--local`` runs the same steps on a local Dask cluster instead: a dry run of the
recipe on one machine. PBS, LSF and SGE clusters work the same way with dask-jobqueue's PBSCluster,
LSFCluster or SGECluster.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def start_cluster(args: argparse.Namespace):
    if args.local:
        from distributed import LocalCluster

        return LocalCluster(n_workers=args.jobs, threads_per_worker=1, processes=True, dashboard_address=None)
    from dask_jobqueue import SLURMCluster  # pip install dask-jobqueue

    extra = ["--gres=gpu:1"] if args.gpu else []
    cluster = SLURMCluster(cores=1, processes=1, memory=args.memory, walltime=args.walltime,
                           job_extra_directives=extra, worker_extra_args=["--nthreads", "1"])  # fmt: skip
    print(cluster.job_script())
    cluster.scale(jobs=args.jobs)
    return cluster


def batch_command(args: argparse.Namespace, address: str) -> list[str]:
    """`geoseg batch` against the cluster's scheduler (the same command works from any shell)."""
    device = ["--device", "cuda"] if args.gpu else []
    # the geoseg of the Python running this script, so the client and the workers share one environment
    return [sys.executable, "-m", "geoseg", "batch", *args.inputs, "--model", args.model, "--out-dir", args.out_dir,
            "--scheduler", address, "--resume", *device, "--progress", "none"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="mosaics, folders, globs or list files, as for geoseg batch")
    parser.add_argument("--model", required=True, help="the model bundle (or .onnx), on shared storage")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs, one worker each")
    parser.add_argument("--memory", default="8GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--gpu", action="store_true", help="a GPU per job, and --device cuda")
    parser.add_argument("--local", action="store_true", help="a local cluster instead of SLURM (a dry run)")
    args = parser.parse_args(argv)
    cluster = start_cluster(args)
    try:
        # --resume: a rerun after a walltime kill picks up where the last one stopped
        return subprocess.run(batch_command(args, cluster.scheduler_address), check=False).returncode
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
