"""detectron2's ``launch``, with worker processes that leave together and exit cleanly."""
import functools
import logging
import os
import sys

import torch
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm


def _run_then_leave(main_func, *args):
    """Runs ``main_func(*args)`` in a worker process of a multi-process launch, then waits for
    all workers, closes the process group and ends the process at once.

    The immediate exit (after flushing the logs and standard streams) skips the interpreter's
    teardown: there, a gloo worker sometimes aborts ("terminate called without an active
    exception", SIGABRT) while destroying the distributed objects, which failed a finished run.
    """
    main_func(*args)
    comm.synchronize()
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(main_func, num_gpus_per_machine, num_machines=1, **kwargs):
    """``detectron2.engine.launch``; with several processes each runs ``main_func`` through
    ``_run_then_leave``. One process runs ``main_func`` in this process, as detectron2 does."""
    if num_gpus_per_machine * num_machines > 1:
        main_func = functools.partial(_run_then_leave, main_func)
    detectron2_launch(main_func, num_gpus_per_machine, num_machines=num_machines, **kwargs)
