#!/usr/bin/env python3
"""Writes services/core/tests/fixtures/imported_hashes.json: password hashes made by other
implementations than Roster's, each with its password and a wrong one, for the tests of
`roster_core::imported_hash` and of the import (docs/import.md).

Made with Python 3.11.7 and, from PyPI: bcrypt 5.0.0, argon2-cffi 25.1.0, passlib 1.7.4 (phpass);
hashlib for scrypt, PBKDF2 and the salted digests. Run it in a throwaway virtualenv:

    python3 -m venv /tmp/hashvenv && /tmp/hashvenv/bin/pip install bcrypt argon2-cffi passlib
    /tmp/hashvenv/bin/python ops/test/make_hash_fixtures.py

Costs are small so the tests stay fast; the Firebase entry is the sample Firebase publishes
with its scrypt fork (github.com/firebase/scrypt, README).
"""
import base64
import hashlib
import json
import pathlib

import argon2
import bcrypt
from argon2.low_level import Type
from passlib.hash import phpass

OUT = pathlib.Path(__file__).resolve().parents[2] / "services/core/tests/fixtures/imported_hashes.json"
b64 = lambda b: base64.b64encode(b).decode()
entries = []


def add(password, wrong, password_hash, source):
    entries.append({"password": password, "wrong": wrong, "password_hash": password_hash, "source": source})


for prefix in (b"2b", b"2a"):
    h = bcrypt.hashpw(b"bcrypt password", bcrypt.gensalt(rounds=4, prefix=prefix)).decode()
    add("bcrypt password", "bcrypt passwort", {"algorithm": "bcrypt", "hash": h}, f"python bcrypt {bcrypt.__version__}")
# PHP's $2y$ is $2b$ by another name: the same hash.
h = bcrypt.hashpw("pässword ☃".encode(), bcrypt.gensalt(rounds=5)).decode().replace("$2b$", "$2y$", 1)
add("pässword ☃", "pässword ☂", {"algorithm": "bcrypt", "hash": h}, f"python bcrypt {bcrypt.__version__} ($2y$ prefix)")

for kind, name in ((Type.ID, "argon2id"), (Type.I, "argon2i"), (Type.D, "argon2d")):
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=kind)
    add(f"{name} password", f"{name} passwort", {"algorithm": "argon2", "hash": hasher.hash(f"{name} password")},
        "argon2-cffi 25.1.0")

salt = b"scrypt-salt-0123"
key = hashlib.scrypt(b"scrypt password", salt=salt, n=1024, r=8, p=1, dklen=32)
add("scrypt password", "scrypt passwort",
    {"algorithm": "scrypt", "hash": b64(key), "salt": b64(salt), "n": 1024, "r": 8, "p": 1, "length": 32},
    "python hashlib.scrypt")

add("user1password", "user2password", {
    "algorithm": "scrypt_modified",
    "hash": "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
    "salt": "42xEC+ixf3L2lw==", "salt_separator": "Bw==",
    "signer_key": "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
    "rounds": 8, "memory_cost": 14,
}, "Firebase's published sample (firebase/scrypt README)")

for digest, name in (("sha256", "pbkdf2_sha256"), ("sha512", "pbkdf2_sha512")):
    salt = b"pbkdf2-salt"
    key = hashlib.pbkdf2_hmac(digest, f"{name} password".encode(), salt, 1000)
    add(f"{name} password", f"{name} passwort",
        {"algorithm": name, "hash": b64(key), "salt": b64(salt), "iterations": 1000}, "python hashlib.pbkdf2_hmac")

for name in ("md5", "sha1", "sha256", "sha512"):
    password = f"{name} password"
    for position in ("prefix", "suffix"):
        salt = f"{name}-{position}-salt"
        data = (salt + password) if position == "prefix" else (password + salt)
        add(password, f"{name} passwort", {"algorithm": name, "hash": hashlib.new(name, data.encode()).hexdigest(),
             "salt": salt, "salt_position": position}, "python hashlib")
    add(password, f"{name} passwort", {"algorithm": name, "hash": hashlib.new(name, password.encode()).hexdigest()},
        "python hashlib (no salt)")

for ident in ("P", "H"):
    h = phpass.using(rounds=8, ident=ident).hash("phpass password")
    add("phpass password", "phpass passwort", {"algorithm": "phpass", "hash": h}, "passlib 1.7.4 phpass")

OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
print(f"{len(entries)} entries written to {OUT}")
