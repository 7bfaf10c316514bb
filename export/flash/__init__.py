"""Flashing: put a signed release on devices (``edge-export flash``).

- :mod:`export.flash.ssh` — the system OpenSSH client, one connection per device;
- :mod:`export.flash.over_ssh` — one device: the archive streamed to ``edge release deploy -``, its
  steps relayed, the device's JSON record kept on the workstation;
- :mod:`export.flash.rootfs` — offline: a release, the key and the units written into a mounted
  Raspberry Pi OS root file system;
- :mod:`export.flash.fleet` — many devices: an Ansible playbook (rolling batches, stop on failures)
  running the same device-side command, and the per-host result table.

The procedure itself (verify, self-test, bench, switch, restart, health, rollback) runs on the
device (:mod:`edge.deploy`), so that no workstation or network failure can stop it half-way.
"""
