"""Submits one Ray job and follows it; run by `flotilla submit` with the runtime's Python.

The job's description arrives as JSON on standard input (never argv, so secrets passed as job
environment variables stay out of the process table); the Ray token arrives in this process's
environment. Prints the job's logs as they come, then its final status; the exit code is 0 only
if the job succeeded.
"""

import asyncio
import json
import sys


def main() -> int:
    spec = json.load(sys.stdin)
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError as e:  # pragma: no cover - the runtime always has Ray
        print(f"error: this runtime has no Ray job client: {e}", file=sys.stderr)
        return 3
    try:
        client = JobSubmissionClient(spec["address"])
        job_id = client.submit_job(
            entrypoint=spec["entrypoint"],
            runtime_env=spec.get("runtime_env") or None,
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        print(f"error: the cluster refused the job: {e}", file=sys.stderr)
        return 3
    if not spec.get("wait", True):
        print(job_id)
        return 0
    print(f"Job {job_id} submitted; following its logs (Ctrl-C stops following, not the job).",
          file=sys.stderr, flush=True)

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        print(f"\nstopped following; the job {job_id} keeps running", file=sys.stderr)
        return 130
    status = client.get_job_status(job_id)
    info = client.get_job_info(job_id)
    print(f"Job {job_id} {status.value}: {info.message or ''}".rstrip(": "), file=sys.stderr,
          flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
