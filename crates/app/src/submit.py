"""Submits one Ray job; run by `flotilla submit` with the runtime's Python.

The job's description arrives as JSON on standard input (never argv, so secrets passed as job
environment variables stay out of the process table); the Ray token arrives in this process's
environment. Uploads the working directory (Ray's client does that), submits, and prints the
job's id on standard output; `flotilla submit` follows the job from there.
"""

import json
import sys


def merged_runtime_env(spec: dict) -> dict:
    """The job's runtime env: the --runtime-env file (YAML or JSON), then the options on top.

    Packages from --pip/--requirements join the file's `pip` list; --secret variables join its
    `env_vars`; --working-dir replaces its `working_dir`.
    """
    base: dict = {}
    text = spec.get("runtime_env_text")
    if text is not None:
        import yaml  # Ray depends on PyYAML; YAML is a superset of JSON.

        name = spec.get("runtime_env_file") or "the runtime env file"
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--runtime-env {name}: not YAML or JSON: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(
                f"--runtime-env {name}: expected a mapping such as `pip: [pandas]`, "
                f"found {type(loaded).__name__}"
            )
        base = loaded
    extra = spec.get("runtime_env") or {}
    for key, value in extra.items():
        if key == "pip" and "pip" in base:
            have = base["pip"]
            if isinstance(have, dict):
                have = dict(have)
                have["packages"] = list(have.get("packages") or []) + list(value)
                base["pip"] = have
            elif isinstance(have, list):
                base["pip"] = have + list(value)
            else:
                raise ValueError(
                    "--pip/--requirements cannot be added to a runtime env whose `pip` is a "
                    "file path: list the packages in one place"
                )
        elif key == "env_vars" and isinstance(base.get("env_vars"), dict):
            base["env_vars"] = {**base["env_vars"], **value}
        else:
            base[key] = value
    return base


def main() -> int:
    spec = json.load(sys.stdin)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as e:  # pragma: no cover - the runtime always has Ray
        print(f"error: this runtime has no Ray job client: {e}", file=sys.stderr)
        return 3
    try:
        runtime_env = merged_runtime_env(spec)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        client = JobSubmissionClient(spec["address"])
        job_id = client.submit_job(
            entrypoint=spec["entrypoint"],
            runtime_env=runtime_env or None,
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        print(f"error: the cluster refused the job: {e}", file=sys.stderr)
        return 3
    print(job_id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
