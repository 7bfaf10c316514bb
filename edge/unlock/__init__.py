"""Face unlock on the device: enrol, verify (for PAM), encrypted templates, lockout, audit.

Modules, one job each:

- :mod:`edge.unlock.config` — where the state lives (options, environment, FHS defaults);
- :mod:`edge.unlock.keys` — the :class:`~edge.unlock.keys.KeyProvider` protocol and the
  root-only key file;
- :mod:`edge.unlock.store` — AES-256-GCM template records bound to user, model and format;
  :mod:`edge.unlock.transfer` — passphrase-encrypted export/import;
- :mod:`edge.unlock.lockout` — consecutive-failure lockout with exponential back-off;
- :mod:`edge.unlock.audit` — the JSONL audit log (no images);
- :mod:`edge.unlock.guards` — refusal over SSH and with the lid closed;
- :mod:`edge.unlock.enroll`, :mod:`edge.unlock.verify` — the two decisions;
- :mod:`edge.unlock.app` — all of it wired together for ``edge unlock``;
- :mod:`edge.unlock.service` — ``edge unlock serve``: the app kept loaded behind a Unix socket;
  :mod:`edge.unlock.client` — its stdlib-only client, what the PAM helper runs.

Nothing here touches a camera or loads a model at import time.
"""
