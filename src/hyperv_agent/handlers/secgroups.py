"""Security groups on flat networks (protocol §14): SecurityGroupRulesCmd,
NetworkRulesVmSecondaryIpCommand, NetworkRulesSystemVmCommand and CleanupNetworkRulesCmd,
as the extended ACLs of the VM adapters' switch ports.

The rules are translated (``sgrules``) before anything is touched, so a rule that cannot be
translated fails the answer with the field named and leaves the port as it was. The port
is then brought to the translation in one diff (``hyperv.acls``: at most one remove call
and one add call), holding the VM's lock (shared with the VM handlers), so a StartCommand
re-creating the VM and a rule change never interleave.

The management server sends a VM's rule set when it changes (a rule, a group member, the
VM started or migrated) and again when a failure is retried. A command whose VM, VM id,
MAC, signature, sequence number and rules are those this handler last applied, to a port
the session still knows as it left it, is answered at once without a round trip.
Anything else (an agent restart, a VM migrated here, stopped and started, a secondary
address added) is planned against the port as it is, and costs no call when the port
already holds the rules.

A sequence number older than that of the rule set the port holds is answered with success
and ignored (it was overtaken), as XenServer's ``network_rules`` does. The MS's
``SecurityGroupManagerImpl2`` reads a VM's number (``op_vm_ruleset_log``) and its rules
apart, in any of several workers, and the commands reach the host in the order those
posted them: an older set can follow a newer one, also across an agent restart (one
queued behind a newer one while the agent restarts is posted once it is back), and the
MS re-sends nothing to a Hyper-V host (its ping carries no rule-set states to compare),
so an older set applied late would stay. The number is kept where the rules are: an ACL
of the port named ``cloudstack-sg/seqnum/<vmId>/<seqNum>`` (``sgrules.seqnum_acl``, a
deny the default deny makes redundant), written in the same calls as the rule set's ACLs.
It is the one home that cannot disagree with the rules it numbers: a file of the agent's
would outlive a VM made again under its name (a new port, the MS counting from 1 again),
miss a VM migrated here with its ACLs, and say a number whose rules a failed call never
wrote. A VM made again, or stopped and started (the agent makes its VM again), starts
from no number; a port of a system VM loses it with the agent's ACLs. A new number for
the same rules costs the marker's removal and addition (2 calls). After the MS's database
is restored from a backup its numbers start lower: a running VM's rule sets are ignored
until they pass the one on its port, or the VM is stopped and started, or an administrator
removes that ACL (Remove-VMNetworkAdapterExtendedAcl with its Weight and Direction);
XenServer hosts keep such a number per running VM in the same way.

A VM Hyper-V is starting, stopping or saving takes no change to its ports' features until
that is done (a SecurityGroupRulesCmd follows a StartCommand's answer at once, and the VM
may still be starting on a slow host, or stopping when HA or the guest stops it): the port
is read once the change is done, within the job wait and the command's bound
(``jobs.command_bound``: half the command's ``wait``; ``acls.read_ports``), at no cost
for a VM in a steady state; one still changing after that fails the answer, naming the
change. A CleanupNetworkRulesCmd waits the same way before removing the leftover ACLs of
such a VM (``acls.sweep``); one still changing after that keeps its leftovers for the
next cleanup, as does one whose removal the host refuses, and the other VMs' are removed
all the same (a false answer names each VM left and why).

A command whose ``vmName`` can name no VM (blank, or holding a character XML cannot carry)
fails before any query (``vm.named_vm``).

A failed SecurityGroupRuleAnswer says why: ``CANNOT_BRIDGE_FIREWALL`` when the VM, its
adapter or port does not exist or the host has no extended ACLs (the MS does not retry),
``PROGRAMMING_FAILED`` for anything else (the MS retries three times).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from hyperv_agent.cloudstack import names
from hyperv_agent.cloudstack.answers import (
    FAILURE_CANNOT_BRIDGE_FIREWALL,
    FAILURE_NONE,
    Answer,
    SecurityGroupRuleAnswer,
)
from hyperv_agent.cloudstack.commands_network import (
    CleanupNetworkRulesCmd,
    NetworkRulesSystemVmCommand,
    NetworkRulesVmSecondaryIpCommand,
    SecurityGroupRulesCmd,
)
from hyperv_agent.cloudstack.objects import IpPortAndProto
from hyperv_agent.errors import HyperVError, InvalidRequest
from hyperv_agent.handlers import sgrules
from hyperv_agent.handlers.dispatch import Result, Route, Routes
from hyperv_agent.handlers.sgrules import RuleError
from hyperv_agent.handlers.vm import VmLocks, named_vm
from hyperv_agent.hyperv import acls, jobs, nics, vms
from hyperv_agent.hyperv.portacls import AclChange, AclSpec, PortSecurity, as_spec
from hyperv_agent.hyperv.session import HyperV

log = logging.getLogger("hyperv_agent.handlers.secgroups")

_ADD, _DELETE = "-A", "-D"  # NetworkRulesVmSecondaryIpCommand.action
#: A rule as the re-send cache compares it.
_RuleKey = tuple[str | None, int, int, tuple[str, ...]]


class FirewallUnavailable(HyperVError):
    """The VM's adapter cannot take ACLs here: the MS stops retrying."""

    answer_fields = MappingProxyType({"reason": FAILURE_CANNOT_BRIDGE_FIREWALL})


class _Overtaken(Exception):
    """The port holds a newer rule set of the VM than the command's (``newest``)."""

    def __init__(self, newest: int) -> None:
        super().__init__(f"seqNum {newest} is applied")
        self.newest = newest


@dataclass(frozen=True)
class _Applied:
    """What this handler last applied to one port, and the port as it left it."""

    key: tuple[object, ...]
    port: acls.Port


class SecurityGroupHandlers:
    """The security-group commands of one host, sharing the VM lock table ``locks``."""

    def __init__(self, hv: HyperV, locks: VmLocks,
                 job_wait: jobs.WaitPolicy = jobs.DEFAULT_POLICY) -> None:
        self.hv = hv
        self.locks = locks
        # how long a VM Hyper-V is starting, stopping, ... is waited for (``power.settle``)
        self.job_wait = job_wait
        self._applied: dict[tuple[str, str], _Applied] = {}  # by (VM name, MAC)

    def table(self) -> Routes:
        """The handlers of this module by command FQCN (for ``Dispatch``)."""
        return {
            names.SECURITY_GROUP_RULES_CMD: Route(SecurityGroupRulesCmd, self.rules),
            names.NETWORK_RULES_VM_SECONDARY_IP_COMMAND: Route(
                NetworkRulesVmSecondaryIpCommand, self.secondary_ip),
            names.NETWORK_RULES_SYSTEM_VM_COMMAND: Route(NetworkRulesSystemVmCommand,
                                                         self.system_vm),
            names.CLEANUP_NETWORK_RULES_CMD: Route(CleanupNetworkRulesCmd, self.cleanup),
        }

    # --- SecurityGroupRulesCmd ----------------------------------------------------------

    async def rules(self, command: SecurityGroupRulesCmd) -> Result:
        """Give the adapter ``guestMac`` of ``vmName`` exactly what its ingress and egress
        rules allow (``sgrules``), with the port security of a user VM.

        An unchanged re-send: success, no round trip. An older ``seqNum`` than the one
        the port holds (``sgrules.seqnum_acl``): success, ignored, no call. A rule,
        address or MAC that cannot be translated: a failure naming the field, nothing
        changed. No such VM, adapter or port, or no
        extended ACLs on the host: CANNOT_BRIDGE_FIREWALL, nothing changed. Otherwise
        the port is brought to the rules (module notes); the details say what changed
        and what the ACLs cannot say exactly (ICMP types).
        """
        vm_name = _vm_name(command.vm_name)
        mac = _mac(command.guest_mac, "guestMac")
        seq, vm_id = command.seq_num or 0, command.vm_id or 0
        key = _key(command, mac)
        if self._unchanged(vm_name, mac, key):
            return _rule_answer(command, "the rules are applied already")
        addresses = sgrules.nic_addresses(mac, command.guest_ip, command.guest_ip6,
                                          command.sec_ips)
        translation = sgrules.translate(command.ingress_rule_set or (),
                                        command.egress_rule_set or (), addresses)
        wanted = (*translation.acls, sgrules.seqnum_acl(vm_id, seq))

        def unless_overtaken(port: acls.Port) -> Sequence[AclSpec]:
            newest = sgrules.applied_seqnum(_owned_specs(port), vm_id)
            if newest is not None and seq < newest:
                raise _Overtaken(newest)
            return wanted

        async with self.locks.hold(vm_name):
            try:
                applied = await self._bring(vm_name, mac, unless_overtaken,
                                            sgrules.USER_VM_SECURITY)
            except _Overtaken as overtaken:
                return _rule_answer(command, f"seqNum {seq} is older than "
                                             f"{overtaken.newest}, which is applied; ignored")
            self._applied[(vm_name, mac)] = _Applied(key, applied.port)
        return _rule_answer(command, "; ".join([_summary(applied.change),
                                                *translation.notes]))

    def _unchanged(self, vm_name: str, mac: str, key: tuple[object, ...]) -> bool:
        """Whether ``key`` is what was last applied to the port, which is as it was left."""
        last = self._applied.get((vm_name, mac))
        return (last is not None and last.key == key
                and acls.known_port(self.hv, vm_name, mac) is last.port)

    async def _bring(self, vm_name: str, mac: str, wanted: acls.Wanted,
                     security: PortSecurity | None) -> acls.Applied:
        try:
            return await acls.bring_to(self.hv, vm_name, mac, wanted, security, self.job_wait)
        except acls.PortUnavailable as error:
            raise FirewallUnavailable(str(error)) from error

    # --- NetworkRulesVmSecondaryIpCommand ------------------------------------------------

    async def secondary_ip(self, command: NetworkRulesVmSecondaryIpCommand) -> Result:
        """Let the adapter ``vmMac`` of ``vmName`` send from ``vmSecIp`` too (``action``
        -A), as from its other addresses of that family, or no longer (-D). The rest of
        the port's ACLs stays. With ``applySecurityGroupRules`` false: nothing to do.
        A malformed address, MAC or action: a failure naming the field, nothing changed.
        No such VM, adapter or port: a failure. A repeat is safe (no call)."""
        vm_name = _vm_name(command.vm_name)
        mac = _mac(command.vm_mac, "vmMac")
        address = sgrules.own_address("vmSecIp", command.vm_sec_ip)
        if command.action not in (_ADD, _DELETE):
            raise RuleError("action", f"{command.action!r} is not {_ADD} or {_DELETE}")
        adding = command.action == _ADD

        def wanted(port: acls.Port) -> Sequence[AclSpec]:
            current = _owned_specs(port)
            return (sgrules.with_address(current, address) if adding
                    else sgrules.without_address(current, address))

        async with self.locks.hold(vm_name):
            applied = await self._bring(vm_name, mac, wanted, None)
        verb = "may send from" if adding else "no longer sends from"
        return Answer(result=True, details=f"{vm_name} {mac} {verb} {address}: "
                                           f"{_summary(applied.change)}")

    # --- NetworkRulesSystemVmCommand -----------------------------------------------------

    async def system_vm(self, command: NetworkRulesSystemVmCommand) -> Result:
        """Let a system VM (router, console proxy, secondary storage VM) send and receive
        everything on every adapter: the agent's ACLs removed, the port security of a
        system VM (it serves DHCP and routes). No such VM: a failure. A repeat is safe;
        an administrator's ACLs stay."""
        vm_name = _vm_name(command.vm_name)
        async with self.locks.hold(vm_name):
            try:
                ports = await acls.read_ports(self.hv, vm_name, self.job_wait)
            except acls.PortUnavailable as error:
                raise FirewallUnavailable(str(error)) from error
            changes = [(await acls.apply(self.hv, port, (), sgrules.SYSTEM_VM_SECURITY))[1]
                       for port in ports]
        for key in [key for key in self._applied if key[0] == vm_name]:
            del self._applied[key]
        removed = sum(len(change.remove) for change in changes)
        return Answer(result=True, details=f"{vm_name} ({command.type or 'system VM'}): "
                                           f"{len(ports)} adapters open, {removed} ACLs removed")

    # --- CleanupNetworkRulesCmd ----------------------------------------------------------

    async def cleanup(self, command: CleanupNetworkRulesCmd) -> Result:
        """Forget what is known of VMs that are no longer on the host (their ports and the
        rules last applied), and remove the agent's ACLs whose port no longer exists
        (their seqNum ACL with them). Those of a VM Hyper-V is starting, stopping or saving
        are removed once that is done, as the other commands wait (module notes). A VM
        still changing after that, or whose ACLs the host refuses to remove, keeps its
        own for the next cleanup and the others' are removed all the same: the answer
        is then false and names each VM left and why. A host that stops answering while
        the leftovers are removed ends the cleanup there: false, naming the VM it was at
        and how many VMs' leftovers (and ACLs) were removed before, so that the MS's log
        tells a partial cleanup from none. Otherwise true when the host answers; safe to
        repeat.

        The MS does nothing with this answer but log it: ``SecurityGroupListener`` acts
        on SecurityGroupRuleAnswers only, and the attache's cron sends the command again
        at its interval whatever the result. A partial sweep answers false, as KVM's and
        XenServer's resources answer when their cleanup script fails, so that the MS's
        log says the host still holds leftovers, and which."""
        listed = await vms.list_vms(self.hv)
        present = {vm.name for vm in listed}
        forgotten = acls.forget_absent(self.hv, present)
        forgotten |= _forget_absent(self._applied, present)
        swept = await acls.sweep(self.hv, listed, self.job_wait)
        cut = swept.cut_short
        details = "; ".join([
            *([] if cut is None else [
                f"the host stopped answering at VM {cut.vm}, after the leftover ACLs of "
                f"{cut.cleared} VMs had been removed; the rest are left for the next "
                f"cleanup: {cut.error}"]),
            f"{swept.removed} ACLs of ports that no longer exist removed",
            f"{len(forgotten)} VMs no longer here forgotten",
            *(f"{left.count} ACLs of VM {left.vm} left for the next cleanup: {left.reason}"
              for left in swept.left)])
        return Answer(result=not swept.left and cut is None, details=details)


# --- helpers ------------------------------------------------------------------------------


_VmKey = TypeVar("_VmKey", bound=tuple[str, object])


def _forget_absent(kept: dict[_VmKey, Any], present: set[str]) -> set[str]:
    """Drop the entries of ``kept`` (by VM name first) of VMs not in ``present``; their
    names."""
    gone = {key for key in kept if key[0] not in present}
    for key in gone:
        del kept[key]
    return {key[0] for key in gone}


def _required(value: str | None, field: str) -> str:
    if not value or not value.strip():
        raise RuleError(field, "missing")
    return value


def _vm_name(value: str | None) -> str:
    """A command's ``vmName``: missing, a failure naming the field (``RuleError``); one
    that can name no VM (blank, or holding a character XML cannot carry), a failure saying
    so (``named_vm``); both before any query."""
    if value is None:
        raise RuleError("vmName", "missing")
    return named_vm(value)


def _mac(value: str | None, field: str) -> str:
    try:
        return nics.normalize_mac(_required(value, field))
    except InvalidRequest as error:
        raise RuleError(field, str(error)) from None


def _key(command: SecurityGroupRulesCmd, mac: str) -> tuple[object, ...]:
    """What makes a command the same as another for the re-send cache."""
    return (command.vm_id, mac, command.signature, command.seq_num, command.guest_ip,
            command.guest_ip6, tuple(command.sec_ips or ()),
            _rules_key(command.ingress_rule_set), _rules_key(command.egress_rule_set))


def _rules_key(rules: Sequence[IpPortAndProto] | None) -> tuple[_RuleKey, ...]:
    return tuple((r.proto, r.start_port, r.end_port, tuple(r.allowed_cidrs or ()))
                 for r in rules or ())


def _owned_specs(port: acls.Port) -> list[AclSpec]:
    return [spec for spec in (as_spec(acl) for acl in port.owned) if spec is not None]


def _summary(change: AclChange) -> str:
    if change.unchanged:
        return f"the port holds the rules already ({change.kept} ACLs)"
    return f"{len(change.add)} ACLs added, {len(change.remove)} removed, {change.kept} kept"


def _rule_answer(command: SecurityGroupRulesCmd, details: str) -> SecurityGroupRuleAnswer:
    return SecurityGroupRuleAnswer(
        result=True, details=details, log_sequence_number=command.seq_num or 0,
        vm_id=command.vm_id or 0, reason=FAILURE_NONE)
