"""``dev.stats()``: counts and times the scheduler kept, as a dict that prints as a table."""

from __future__ import annotations


class Stats(dict):
    """A plain dict (JSON-friendly) whose ``str()`` is a short human-readable report."""

    @property
    def worker_tasks(self) -> int:
        return sum(k["tasks"] for k in self.get("kernels", {}).values())

    @property
    def runtime_tasks(self) -> int:
        return int(self.get("runtime_tasks", {}).get("alloc", 0))

    def __str__(self) -> str:
        lines = []
        d = self.get("device", {})
        lines.append(f"device: {d.get('blocks')} blocks ({d.get('cores')} cores), task window "
                     f"{d.get('task_window')}, started in {d.get('start_s', 0):.2f} s")
        run = self.get("last_run") or {}
        if run:
            lines.append(f"last run: {run['tasks']} tasks in {run['wall_s'] * 1e3:.1f} ms "
                         f"({run['tasks_per_s']:,.0f} tasks/s); host submit "
                         f"{run['host_submit_s'] * 1e3:.1f} ms, "
                         f"host waiting {run['host_wait_s'] * 1e3:.1f} ms")
        lines.append(f"{'kernel':<40} {'tasks':>9} {'exec ms':>10} {'skipped':>8} {'errors':>7} {'pred false':>10}")
        for name, k in sorted(self.get("kernels", {}).items()):
            lines.append(f"{name:<40} {k['tasks']:>9} {k['exec_ns'] / 1e6:>10.2f} {k['skipped']:>8} "
                         f"{k['errors']:>7} {k.get('predicate_false', 0):>10}")
        rt = self.get("runtime_tasks", {})
        lines.append(f"worker tasks {self.worker_tasks}; runtime tasks (no worker): alloc "
                     f"{rt.get('alloc', 0)}, dummy {rt.get('dummy', 0)}, scope ends {rt.get('scope_end', 0)}")
        for kind, c in self.get("cores", {}).items():
            lines.append(f"{kind} cores: {c['parts_run']} task parts run, {c['busy_s'] * 1e3:.1f} ms busy")
        n = self.get("timed_tasks", 0)
        if n:
            ph = self.get("phase_ns", {})
            lines.append("mean per task (us): " + ", ".join(
                f"{k.replace('_', ' ')} {v / n / 1e3:.1f}" for k, v in ph.items()))
        return "\n".join(lines)
