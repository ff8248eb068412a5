"""Run one ai-toolkit job in-process and record the wall time of every training step.

Started by ``step_overhead.py`` with the staged ai-toolkit root as working
directory: ``python _timed_job.py CONFIG.yaml RESULT.json``. It wraps each
process's ``hook_train_loop`` (one optimizer step, including the text-encoder
forward/backward when the placeholder trains) with a timer, runs the job as
``run.py`` would, and writes the step times, the peak RSS and the RSS at the
end of the run (after a pivot has unloaded the text encoder) as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    config_path, result_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.getcwd())
    from toolkit.job import get_job  # noqa: PLC0415  (ai-toolkit, importable only from its root)

    job = get_job(config_path)
    times: list[float] = []
    for process in job.process:
        step = process.hook_train_loop

        def timed(batch, _step=step):
            start = time.perf_counter()
            result = _step(batch)
            times.append(time.perf_counter() - start)
            return result

        process.hook_train_loop = timed
    job.run()
    with open("/proc/self/statm", encoding="ascii") as statm:
        end_mib = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    job.cleanup()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({"step_seconds": times, "peak_rss_mib": peak_kib / 1024, "end_rss_mib": end_mib}, handle)


if __name__ == "__main__":
    main()
