"""The OOM-kill counter the local harness reads around every job (to report a cgroup OOM as "memory")."""

from __future__ import annotations

from k2rl.sandboxes.cgroups import OomKills


def test_oom_counter_rereads_its_open_files(tmp_path):
    v2, v1, neither = tmp_path / "v2", tmp_path / "v1", tmp_path / "pids"
    for group in (v2, v1, neither):
        group.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    counter = OomKills([v2, v1, neither])  # a hierarchy without a memory controller is skipped
    try:
        assert counter.count() == 3
        # The files stay open: a new value is seen without reopening (the kernel rewrites them in place).
        with open(v1 / "memory.oom_control", "r+") as handle:
            handle.write("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
        assert counter.count() == 8
    finally:
        counter.close()
    assert counter.count() == 0 and counter.fds == []
