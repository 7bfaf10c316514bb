"""``edge-export keygen --out DIR``: create the Ed25519 key pair that signs bundles."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing bundles",
                       description="Write bundle_signing.key (private, mode 0600) and bundle_signing.pub "
                                   "(public; copy it to the devices) into DIR.")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the key files")
    p.add_argument("--force", action="store_true", help="replace existing key files")
    p.set_defaults(func=cmd_keygen)


def cmd_keygen(args) -> int:
    from export.bundle.keys import fingerprint, generate_keypair, load_private_key

    priv, pub = generate_keypair(args.out, force=args.force)
    print(f"wrote {priv} (private, keep it secret)\nwrote {pub} (public, key id {fingerprint(load_private_key(priv))})")
    return 0
