"""One measurement in a fresh interpreter: ``python -m bench.child TASK JSON-PARAMS``.

Prints one JSON line: the task's result plus ``peak_kib``, this process's peak RSS (VmHWM).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from .cold import load_botocore_s3, load_floor_folder, load_floor_s3, load_folder, load_least_folder, load_s3
from .memory import measure_memory
from .procs import memory_kib
from .rescan import measure_rescans, measure_rescans_s3
from .restart import measure_restart, prepare_restart

TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "load_folder": load_folder,
    "load_floor_folder": load_floor_folder,
    "load_least_folder": load_least_folder,
    "load_s3": load_s3,
    "load_floor_s3": load_floor_s3,
    "load_botocore_s3": load_botocore_s3,
    "memory": measure_memory,
    "rescans": measure_rescans,
    "rescans_s3": measure_rescans_s3,
    "restart_prepare": prepare_restart,
    "restart": measure_restart,
}


def main() -> None:
    task, params = sys.argv[1], json.loads(sys.argv[2])
    baseline_kib = memory_kib("VmRSS")  # the interpreter and the imports, before any work
    result = TASKS[task](**params)
    result.update(peak_kib=memory_kib("VmHWM"), baseline_kib=baseline_kib)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
