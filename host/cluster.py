"""Several emulated devices: ``DeviceGroup`` -- one device per local slot or per Ray actor.

    group = DeviceGroup(4, Platform(blocks=24), kernels=["kernels.workloads.paged_attention"], backend="ray")
    results = group.run_sharded(pa.orchestrate, shards)      # one list of output arrays per shard

    backend "local"   the devices live in this process (each is its own scheduler + workers);
                      shards run in threads, one per device
    backend "ray"     one Ray actor per device (the vLLM way across nodes: keep the device as it
                      is, put one behind each actor); shard inputs go through Ray's object store
                      as numpy arrays (zero-copy on a node; each array object is put once, so
                      running the same shards again sends nothing new), outputs come back the
                      same way

A shard is ``{"args": [...], "outputs": [(shape, dtype), ...], "kwargs": {...}}``: numpy arrays in
``args`` become device tensors, other values pass as they are; one empty device tensor per
output follows them; the orchestration runs as ``orchestration(rt, *args, *outputs, **kwargs)``
and the outputs come back as numpy arrays. Shards beyond the number of devices queue up.

Failures: a device that dies (DeviceLost, or its actor process lost) is replaced by a fresh one
and the shard is retried once; a second failure, or any other error (KernelError, bad input),
raises ``ShardError`` naming the shard and carrying the device's error. A lost device is always
replaced -- also when its shard gives up -- so the group is whole for the next run. Moving a script from one
machine to a Ray cluster is one argument: ``backend="ray"``.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from host.device import Device
from host.errors import DeviceError, DeviceLost
from host.platform import Platform


class ShardError(DeviceError):
    """A shard failed (after its retry, for a lost device). ``.shard`` is its index and
    ``.__cause__`` the device's own error."""

    def __init__(self, shard: int, attempts: int, error: BaseException) -> None:
        self.shard, self.attempts, self.error = shard, attempts, error
        super().__init__(f"shard {shard} failed after {attempts} attempt(s): {type(error).__name__}: {error}")

    def __reduce__(self):
        return (ShardError, (self.shard, self.attempts, self.error))


class _Array:
    """Placeholder for a numpy argument that travels separately (through Ray's object store)."""


def run_shard(dev: Device, orchestration: Callable, shard: dict, *arrays: np.ndarray) -> tuple[list, dict]:
    """Run one shard on a device; ``arrays`` fill the shard's ``_Array`` placeholders in order."""
    t0 = time.perf_counter()
    it = iter(arrays)
    args = [dev.to_device(next(it) if isinstance(a, _Array) else a) if isinstance(a, (np.ndarray, _Array)) else a
            for a in shard["args"]]
    outs = [dev.empty(shape, dtype) for shape, dtype in shard["outputs"]]
    t1 = time.perf_counter()
    dev.run(orchestration, *args, *outs, **shard.get("kwargs", {}))
    t2 = time.perf_counter()
    res = [dev.to_host(o) for o in outs]
    for t in args + outs:
        if hasattr(t, "buf"):
            dev.free(t)
    t3 = time.perf_counter()
    return res, {"to_device_s": t1 - t0, "run_s": t2 - t1, "to_host_s": t3 - t2}


class _LocalBackend:
    def __init__(self, n: int, make: Callable[[], Device]) -> None:
        self.make = make
        self.devices = []
        try:
            for _ in range(n):
                self.devices.append(make())
        except BaseException:
            self.close()
            raise
        self.pool = cf.ThreadPoolExecutor(n, thread_name_prefix="ptoemu-shard")

    def submit(self, slot: int, orchestration: Callable, shard: dict) -> cf.Future:
        return self.pool.submit(run_shard, self.devices[slot], orchestration, shard)

    @staticmethod
    def lost(err: BaseException) -> bool:
        return isinstance(err, DeviceLost)

    @staticmethod
    def unwrap(err: BaseException) -> BaseException:
        return err

    def replace(self, slot: int) -> None:
        self.devices[slot].close()
        self.devices[slot] = self.make()

    def heal(self) -> None:
        """Replace every device that was lost since the last run."""
        for slot, d in enumerate(self.devices):
            if d.closed:
                self.replace(slot)

    def pids(self) -> list[list[int]]:
        return [d.pids for d in self.devices]

    def close(self) -> None:
        if getattr(self, "pool", None):
            self.pool.shutdown(wait=True)
        for d in self.devices:
            d.close()


class _RayBackend:
    def __init__(self, n: int, platform: Platform, kernels: list, options: dict) -> None:
        import ray
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.spec = (platform, kernels, options)
        self.actor_cls = ray.remote(num_cpus=0)(DeviceActor)
        self.actors = [self.actor_cls.remote(*self.spec) for _ in range(n)]
        ray.get([a.ready.remote() for a in self.actors])
        self.refs: dict[int, tuple] = {}

    def _ref(self, a: np.ndarray):
        """The object-store copy of an input array, put once per array object (running the same
        shards again sends nothing new; a changed array must be a new array object)."""
        key = id(a)
        hit = self.refs.get(key)
        if hit is not None and hit[0]() is a:
            return hit[1]
        ref = self.ray.put(a)
        self.refs[key] = (weakref.ref(a, lambda _, k=key: self.refs.pop(k, None)), ref)
        return ref

    def submit(self, slot: int, orchestration: Callable, shard: dict) -> cf.Future:
        arrays = [self._ref(a) for a in shard["args"] if isinstance(a, np.ndarray)]
        meta = {**shard, "args": [_Array() if isinstance(a, np.ndarray) else a for a in shard["args"]]}
        ref = self.actors[slot].run.remote(orchestration, meta, *arrays)
        return ref.future()

    def lost(self, err: BaseException) -> bool:
        from ray.exceptions import RayActorError
        return isinstance(err, RayActorError) or isinstance(self.unwrap(err), DeviceLost)

    @staticmethod
    def unwrap(err: BaseException) -> BaseException:
        from ray.exceptions import RayTaskError
        if isinstance(err, RayTaskError):
            return err.cause if err.cause is not None else err
        return err

    def replace(self, slot: int) -> None:
        self.ray.kill(self.actors[slot], no_restart=True)
        self.actors[slot] = self.actor_cls.remote(*self.spec)
        self.ray.get(self.actors[slot].ready.remote())

    def pids(self) -> list[list[int]]:
        return self.ray.get([a.pids.remote() for a in self.actors])

    def heal(self) -> None:
        """Replace every actor whose device is gone (a lost actor shows as an error here)."""
        for slot, a in enumerate(self.actors):
            try:
                alive = self.ray.get(a.alive.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - any failure to answer means the actor is gone
                alive = False
            if not alive:
                self.replace(slot)

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.get(a.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - the actor may be gone already
                pass
            self.ray.kill(a, no_restart=True)
        self.actors = []
        self.refs.clear()


class DeviceActor:
    """What a Ray actor holds: one Device (created in the actor's process)."""

    def __init__(self, platform: Platform, kernels: list, options: dict) -> None:
        self.dev = Device(platform, kernels=kernels, **options)

    def ready(self) -> bool:
        return True

    def alive(self) -> bool:
        return not self.dev.closed

    def pids(self) -> list[int]:
        return self.dev.pids

    def run(self, orchestration: Callable, shard: dict, *arrays: np.ndarray) -> tuple[list, dict]:
        return run_shard(self.dev, orchestration, shard, *arrays)

    def close(self) -> None:
        self.dev.close()


class DeviceGroup:
    """``n`` emulated devices behind one API; ``backend`` is "local" or "ray"."""

    def __init__(self, n: int, platform: Platform | None = None, kernels: Iterable = (), *,
                 backend: str = "local", **device_options: Any) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"DeviceGroup(n={n!r}): expected an int >= 1")
        if backend not in ("local", "ray"):
            raise ValueError(f"DeviceGroup(backend={backend!r}): expected 'local' or 'ray'")
        self.n, self.backend_name = n, backend
        self.platform = platform or Platform()
        kernels = list(kernels)
        if backend == "local":
            self.backend: Any = _LocalBackend(n, lambda: Device(self.platform, kernels=kernels, **device_options))
        else:
            self.backend = _RayBackend(n, self.platform, kernels, device_options)
        self.timings: list[dict] = []
        self.retries = 0

    def __enter__(self) -> DeviceGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def pids(self) -> list[list[int]]:
        """Process ids of each device (scheduler first)."""
        return self.backend.pids()

    def run_sharded(self, orchestration: Callable, shards: list[dict]) -> list[list[np.ndarray]]:
        """Run every shard on some device; returns each shard's outputs, in shard order."""
        if self.backend is None:
            raise RuntimeError("DeviceGroup.run_sharded(): the group is closed")
        be = self.backend
        be.heal()
        results: list = [None] * len(shards)
        self.timings = [{} for _ in shards]
        attempts = [0] * len(shards)
        queue = list(range(len(shards)))
        running: dict[cf.Future, tuple[int, int, float]] = {}
        free = list(range(self.n))
        while queue or running:
            while queue and free:
                i, slot = queue.pop(0), free.pop(0)
                attempts[i] += 1
                running[be.submit(slot, orchestration, shards[i])] = (i, slot, time.perf_counter())
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                i, slot, t0 = running.pop(fut)
                err = fut.exception()
                if err is None:
                    results[i], t = fut.result()
                    self.timings[i] = {**t, "total_s": time.perf_counter() - t0, "slot": slot,
                                       "attempts": attempts[i]}
                    free.append(slot)
                    continue
                if be.lost(err):
                    be.replace(slot)                 # never leave a dead device in the group
                    if attempts[i] < 2:
                        self.retries += 1            # the shard once more, on the fresh device
                        queue.insert(0, i)
                        free.append(slot)
                        continue
                for f in running:
                    f.cancel()
                cf.wait(running)
                raise ShardError(i, attempts[i], be.unwrap(err)) from be.unwrap(err)
        return results
