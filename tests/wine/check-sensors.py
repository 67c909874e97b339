"""Checks `flotilla sensors --json` as flotilla.exe printed it under Wine: the machine's CPU
load, the owner's load, free memory and the running programs must be read from Windows' own
calls (Wine implements every one of them), each with its source. Power and idle time are
printed, not required: Wine answers them, but with what the host lends it.

    python3 tests/wine/check-sensors.py sensors.json
"""

import json
import sys

REQUIRED = ["machine_load", "owner_load", "available_memory_fraction", "running_programs"]
SHOWN = ["power", "battery_percent", "idle_secs"]


def main(path):
    report = json.load(open(path))
    problems = []
    for key in REQUIRED + SHOWN:
        reading = report.get(key) or {}
        value, source = reading.get("value"), reading.get("from", "")
        print(f"  {key}: {value!r} from {source!r}")
        if key in REQUIRED:
            if value is None:
                problems.append(f"{key} is unknown ({source})")
            elif "unsupported" in source or not source:
                problems.append(f"{key} has no source of its own ({source!r})")
    if (report.get("running_programs") or {}).get("value") == 0:
        problems.append("no running program listed (flotilla.exe itself runs)")
    for p in problems:
        print(f"sensors under Wine: {p}", file=sys.stderr)
    print("sensors under Wine: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
