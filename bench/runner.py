"""A tiny process that forks, execs and times the benchmarked commands (stdlib only, run with -I -S).

Linux keeps a process's peak RSS (``ru_maxrss``) across fork and exec, so a child forked straight
from the bench, which holds data sets and SQLAlchemy, would report the bench's own size. Forked
from this small process instead, a child's peak RSS is its own (with this runner's few MiB as the
floor). One JSON request per line on stdin, one JSON answer per line on stdout.
"""

import json
import os
import sys
import time


def run(req: dict) -> dict:
    stdin_path, err_path = req.get("stdin"), req["stderr"]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            fd = os.open(stdin_path or os.devnull, os.O_RDONLY)
            os.dup2(fd, 0)
            out = os.open(os.devnull, os.O_WRONLY)
            os.dup2(out, 1)
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(err, 2)
            if req.get("cwd"):
                os.chdir(req["cwd"])
            os.execve(req["argv"][0], req["argv"], req["env"])
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "maxrss_kib": usage.ru_maxrss, "status": os.waitstatus_to_exitcode(status)}


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
