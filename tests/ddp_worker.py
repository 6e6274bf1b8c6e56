"""Run by tests/test_distributed.py under torchrun: trains the demo supernet with DDP (gloo) on tiny
in-memory data and writes this rank's final parameters. Not a test module itself."""
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])

from stnas.methods.stnas import ProxyConfig, proxy_trainer  # noqa: E402
from stnas.spaces import Space  # noqa: E402
from stnas.supernet import SuperNet  # noqa: E402

from tests.test_distributed import CONFIG, TinyShards  # noqa: E402


def main(out):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    data = TinyShards(rank, world)
    torch.manual_seed(0)
    net = SuperNet(Space.load("demo"))
    trainer = proxy_trainer(net, data, data.steps_per_epoch, data.total, ProxyConfig(**CONFIG), progress=False)
    trainer.train()
    torch.save({k: v for k, v in net.named_parameters()}, f"{out}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
