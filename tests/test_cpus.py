"""Where `pipeline: auto` runs the telemetry work, from the CPUs a worker can count on."""

from __future__ import annotations

from pathlib import Path

import pytest

from instrumentation.cpus import cgroup_cpu_quota, choose_pipeline, usable_cpus


@pytest.mark.parametrize(
    ("setting", "cpus", "workers", "expected"),
    [
        ("auto", 1.0, 1, "thread"),  # one core: the process would only add CPU and memory
        ("auto", 1.5, 1, "thread"),  # a fractional Kubernetes limit below two CPUs
        ("auto", 2.0, 1, "process"),  # a core for the event loop, one for telemetry
        ("auto", 8.0, 1, "process"),
        ("auto", 2.0, 2, "thread"),  # --workers 2 on two cores: one core each
        ("auto", 4.0, 2, "process"),
        ("auto", 4.0, 0, "process"),  # a nonsense worker count reads as one
        ("process", 1.0, 1, "process"),  # an explicit setting wins
        ("thread", 16.0, 1, "thread"),
    ],
)
def test_auto_runs_the_telemetry_process_only_with_two_cpus_per_worker(
    setting: str, cpus: float, workers: int, expected: str
) -> None:
    assert choose_pipeline(setting, cpus, workers) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "garbage\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "0\n"}, None),
        ({}, None),  # no cgroup files at all: no limit known
    ],
    ids=["v2-max", "v2-limit", "v2-garbage", "v1-unlimited", "v1-limit", "v1-zero", "none"],
)
def test_the_container_cpu_limit_is_read_from_cgroup_v2_or_v1(
    tmp_path: Path, files: dict[str, str], expected: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == expected


def test_usable_cpus_is_the_lower_of_affinity_and_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert usable_cpus(tmp_path, tmp_path / "none") == 0.5
    assert usable_cpus(tmp_path / "missing", tmp_path / "none") >= 1


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        # systemd CPUQuota on a slice above the process, no cgroup namespace (v2)
        ("0::/system.slice/app.service\n", {"system.slice/cpu.max": "300000 100000"}, 3.0),
        # the tightest of the nested limits counts
        (
            "0::/kubepods/pod1/ctr\n",
            {"kubepods/cpu.max": "800000 100000", "kubepods/pod1/ctr/cpu.max": "150000 100000"},
            1.5,
        ),
        # cgroup v1, cpu controller mounted together with cpuacct
        (
            "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            },
            1.0,
        ),
        # another controller's path is not the cpu controller's
        ("3:memory:/limited\n", {"limited/cpu.max": "100000 100000"}, None),
    ],
    ids=["v2-slice", "v2-nested", "v1-cpu-cpuacct", "v1-other-controller"],
)
def test_the_limit_of_the_processs_own_cgroup_and_its_parents_counts(
    tmp_path: Path, membership: str, files: dict[str, str], expected: float | None
) -> None:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(membership)
    assert cgroup_cpu_quota(root, tmp_path / "self-cgroup") == expected
