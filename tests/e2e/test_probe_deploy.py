"""``probe --deploy`` against the real agent on the emulator."""

from __future__ import annotations

from click.testing import CliRunner

from hyperv_agent import backends, probe
from hyperv_agent.cim import wql
from hyperv_agent.cli import main
from hyperv_agent.probe_deploy import DeployPlan
from tests.e2e.conftest import PRIVATE_IP, Running, every_backend

backend_kind = every_backend  # on the emulator and over WinRM, same answers

STEPS = ["register", "copy template", "root volume", "start VM", "state report", "VM stats",
         "stop VM", "VM gone", "delete volume"]


def _pool_files(running: Running) -> set[str]:
    pool = running.emulator.host.paths.local(
        running.agent.config.agent.local_storage_path or "C:\\")
    return {p.name for p in pool.iterdir()} if pool.is_dir() else set()


async def test_deploy_plays_every_step_on_serves_default_image_store(running: Running) -> None:
    seeded = backends.seed_secondary(running.emulator_config)
    assert seeded is not None and seeded.is_file()

    report = await probe.probe(running.url, PRIVATE_IP, deploy=DeployPlan())

    assert [f.step for f in report.findings] == STEPS, report.table()
    assert report.passed, report.table()
    assert all(f.elapsed_ms > 0 for f in report.findings)
    vms = await running.emulator.query(wql.select("Msvm_ComputerSystem",
                                                  wql.eq("ElementName", "i-2-9001-VM")))
    assert vms == []
    copied = next(f for f in report.findings if f.step == "copy template").detail
    volume = next(f for f in report.findings if f.step == "root volume").detail.split()[-1]
    names = _pool_files(running)
    assert not any(name.startswith(volume) for name in names), names
    template = [n for n in names if n.lower().endswith(".vhdx")]
    assert len(template) == 1 and template[0].split(".")[0] in copied, (names, copied)


async def test_deploy_stops_at_the_copy_and_names_it_when_the_template_is_missing(
        running: Running) -> None:
    plan = DeployPlan(template_path="template/tmpl/1/1/absent.vhdx")

    report = await probe.probe(running.url, PRIVATE_IP, deploy=plan)

    assert [f.step for f in report.findings] == ["register", "copy template"]
    failed = report.findings[-1]
    assert not failed.ok and "absent.vhdx" in failed.detail
    assert failed.rule == "CopyCommand succeeds"


async def test_deploy_programs_security_groups_when_asked(running: Running) -> None:
    backends.seed_secondary(running.emulator_config)

    report = await probe.probe(running.url, PRIVATE_IP,
                               deploy=DeployPlan(security_groups=True))

    assert [f.step for f in report.findings] == [*STEPS[:4], "security groups", *STEPS[4:]]
    assert report.passed, report.table()
    detail = next(f for f in report.findings if f.step == "security groups").detail
    assert "applied" in detail and "refused" in detail


def test_security_groups_flag_is_refused_without_deploy() -> None:
    result = CliRunner().invoke(main, ["probe", "https://127.0.0.1:1", "--security-groups"])
    assert result.exit_code == 2
    assert "--security-groups is a step of --deploy" in result.output
