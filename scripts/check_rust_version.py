#!/usr/bin/env python3
"""Check that the workspace's declared rust-version is honest: at least the highest
rust-version declared by any package in the resolved dependency graph (cargo metadata)."""

import json
import subprocess
import sys


def version(text):
    """1.88 and 1.88.0 are the same version."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(meta["workspace_members"])
    declared = {}
    needed = ("0", "nothing")
    for package in meta["packages"]:
        rv = package.get("rust_version")
        if package["id"] in members:
            declared[package["name"]] = rv
        elif rv and version(rv) > version(needed[0]):
            needed = (rv, package["name"])
    bad = [
        f"{name} declares rust-version {rv}, but {needed[1]} needs {needed[0]}"
        for name, rv in sorted(declared.items())
        if rv is None or version(rv) < version(needed[0])
    ]
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 1
    print(f"   rust-version {sorted(set(declared.values()))} covers every dependency (highest: {needed[1]} {needed[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
