"""`python scripts/fsdp_kill_at.py STEP train ...` = `domainvlm train ...` whose rank 0 SIGKILLs itself as soon as
the checkpoint of step STEP is in place (0: never): a kill at a known point however fast the steps run, so a
resume check does not race the training (scripts/fsdp-resume-check.sh). The launcher then ends the other ranks."""

import os
import signal
import sys

from domainvlm.cli import main
from domainvlm.train import trainer

STOP = int(sys.argv.pop(1))
_save = trainer.save_checkpoint


def _save_then_die(model, processor, optimizer_sd, scheduler, state, *a, **k):
    _save(model, processor, optimizer_sd, scheduler, state, *a, **k)
    if state["step"] == STOP:
        print(f"fsdp_kill_at: checkpoint {STOP} written, SIGKILL", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


trainer.save_checkpoint = _save_then_die
sys.exit(main())
