"""``edge-export profiles [--check FILE]``: list the shipped board profiles, or validate one."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("profiles", help="list the board profiles, or validate one with --check",
                       description="Without options: one line per shipped board profile (name, board, runtime, "
                                   "providers, threads, peaks). With --check FILE: validate a profile TOML file "
                                   "(exit 0 when valid, 2 with the file, key and expected type otherwise).")
    p.add_argument("--check", type=Path, metavar="FILE", help="validate this profile file (or board name)")
    p.set_defaults(func=cmd_profiles)


def _line(prof) -> str:
    r, c = prof.runtime, prof.compute
    return (f"{prof.name:<18} {prof.board:<40} {r.backend:<11} {','.join(r.providers):<18} "
            f"threads {r.threads:<2} fp32 {c.peak_gflops_fp32:g} GFLOP/s  int8 {c.peak_gops_int8:g} GOP/s")


def cmd_profiles(args) -> int:
    from edge.profile import load_profile, profile_names, profiles_dir

    if args.check is not None:
        prof = load_profile(args.check)  # ProfileError (a ValueError) -> exit 2 with the message
        print(f"{prof.path}: valid profile {prof.name!r} ({prof.board})")
        return 0
    print(f"# profiles in {profiles_dir()} (use --profile NAME or --profile FILE)")
    for name in profile_names():
        print(_line(load_profile(name)))
    return 0
