"""`python fsdp_cpu_main.py train ...` = `domainvlm train ...` with accelerate's FSDP path on CPU (gloo).

accelerate picks FSDP only on GPUs (on CPU, ACCELERATE_USE_FSDP=true gives MULTI_CPU, i.e. DDP); torch's FSDP2
(`fully_shard`) itself runs on CPU. This turns the MULTI_CPU state into FSDP with the plugin accelerate built from
the FSDP_* variables, so the trainer's own FSDP code (prepare, gathered saves, sharded resume) runs for real.
"""

import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _fsdp_on_cpu(self, *a, fsdp_plugin=None, **k):
    _init(self, *a, fsdp_plugin=fsdp_plugin, **k)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


AcceleratorState.__init__ = _fsdp_on_cpu

if __name__ == "__main__":
    from domainvlm.cli import main

    sys.exit(main())
