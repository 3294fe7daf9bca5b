"""Two "machines" on one host for tests/test_multinode.py: one ``accelerate launch`` per node
(``--num_machines 2 --machine_rank K``, one process each, gloo on the CPU), each node with
its own HOME, caches and temp dir; only the run dir is shared, as on a real cluster.

Also a plugin module (``SRSCODE_PLUGINS=dist_fakes,multinode_helpers``) with the
``node-stop`` generator: replay, except that on the rank named by ``SRSCODE_TEST_STOP_RANK``
in round ``SRSCODE_TEST_STOP_ROUND`` it writes its pid to ``SRSCODE_TEST_STOP_MARK`` and then
stops answering (sleeps), like a frozen node; the test then kills that node or lets the
process group's timeout fire.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from srscode.core.generate_evaluate import round_seed
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec
from srscode.plugins.generate.replay import ReplayGenerator, ReplayParams

TESTS = Path(__file__).resolve().parent

# the accelerate CLI as a module: torch elastic's workers run `-m srscode.cli.main`
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
          "--dynamo_backend", "no"]


def node_env(root: Path, node: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of node ``node``: nothing on disk shared with the other node but the
    run dir (its own HOME, XDG cache, srs-code model cache, evaluator reference cache, TMPDIR)."""
    home = root / f"node{node}"
    dirs = {"HOME": home / "home", "XDG_CACHE_HOME": home / "cache", "TMPDIR": home / "tmp"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{k: str(v) for k, v in dirs.items()})
    env.update(
        SRSCODE_CACHE=str(dirs["XDG_CACHE_HOME"] / "srscode"),  # model conversion (plugins/lib/hf_model.py)
        SRSCODE_CACHE_DIR=str(dirs["XDG_CACHE_HOME"] / "srscode"),  # evaluator references (sandbox/expected.py)
        HF_HOME=str(dirs["XDG_CACHE_HOME"] / "huggingface"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p),
        SRSCODE_PLUGINS="dist_fakes,multinode_helpers",
        SRSCODE_DIST_TIMEOUT_S="120",
        # hidden accelerators: on a GPU host accelerate would pick NCCL
        CUDA_VISIBLE_DEVICES="", ASCEND_RT_VISIBLE_DEVICES="",
    )
    for k in ("SRSCODE_TEST_WRITE_AUDIT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(extra or {})
    return env


@dataclass
class Node:
    index: int
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """The launcher's process group (torch elastic starts its workers in sessions of their
        own, so kill those by pid: :func:`kill_pid`)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def launch_nodes(root: Path, cfg: dict[str, Any], run_dirs: Sequence[Path], port: int,
                 extra_env: Sequence[dict[str, str] | None] = (None, None), tag: str = "") -> list[Node]:
    """Start node 0 and node 1 (one process each), node K running with ``run_dirs[K]``."""
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    nodes = []
    for k, run_dir in enumerate(run_dirs):
        log = root / f"node{k}{tag}.log"
        cmd = [*LAUNCH, "--num_processes", str(len(run_dirs)), "--num_machines", str(len(run_dirs)),
               "--machine_rank", str(k), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "-m", "srscode.cli.main", "-q", "run", str(config), "--run-dir", str(run_dir)]
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, env=node_env(root, k, (extra_env[k] if k < len(extra_env) else None)),
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=root / f"node{k}" / "home")
        nodes.append(Node(k, proc, log))
    return nodes


def wait_nodes(nodes: Sequence[Node], timeout: float) -> list[int]:
    """Every node's exit code; kills them all if one is not done within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        return [n.wait(max(deadline - time.monotonic(), 0.1)) for n in nodes]
    except subprocess.TimeoutExpired:
        for n in nodes:
            n.kill()
        raise AssertionError("a node did not finish in time:\n" + "\n".join(
            f"--- node {n.index}\n{n.output()[-3000:]}" for n in nodes)) from None


def wait_for_file(path: Path, nodes: Sequence[Node], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        ended = [n for n in nodes if n.proc.poll() is not None]
        if ended or time.monotonic() > deadline:
            for n in nodes:
                n.kill()
            raise AssertionError(f"{path} did not appear:\n" + "\n".join(
                f"--- node {n.index} (rc {n.proc.returncode})\n{n.output()[-3000:]}" for n in nodes))
        time.sleep(0.05)
    return path.read_text().strip()


# --------------------------------------------------------------------- plugin: a node that stops


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


class NodeStopGenerator(ReplayGenerator):
    def generate(self, prompts: Sequence[Any], n: int, adapter: Any, seed: int) -> list[Any]:
        stop_round = int(os.environ.get("SRSCODE_TEST_STOP_ROUND", "2"))
        if (str(_rank()) == os.environ.get("SRSCODE_TEST_STOP_RANK")
                and seed == round_seed(self.ctx.config.seed, stop_round)):
            Path(os.environ["SRSCODE_TEST_STOP_MARK"]).write_text(f"{os.getpid()}\n")
            time.sleep(600)
        return super().generate(prompts, n, adapter, seed)


@hookimpl
def srscode_generators():
    yield ComponentSpec("node-stop", lambda params, ctx: NodeStopGenerator(params, ctx), ReplayParams,
                        "test: replay whose node stops answering in one round")
