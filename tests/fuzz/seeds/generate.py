#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets (run from anywhere; idempotent).

Seeds only give libFuzzer a head start: valid requests of every message, the limits' edges and
well-formed headers. The targets with `Arbitrary`-typed inputs (token_verify, page_token) need
none; seeds/token_verify/ holds regression inputs kept by hand, which this script leaves alone.
"""
import hashlib
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, value):
    """One protobuf field: int/bool as varint, str/bytes as length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields)


def timestamp(seconds, nanos=0):
    return message((1, seconds), (2, nanos))


TASK_ID = "019ab4d2-7c31-7e55-8f0e-1b2c3d4e5f60"
SIGN_UP, LOGIN, CURRENT, CREATE, GET, LIST, UPDATE, DELETE = range(8)

requests = {
    "signup-ok": (SIGN_UP, message((1, "ada@example.com"), (2, "correct horse battery"))),
    "signup-normalised": (SIGN_UP, message((1, "  Ada@Example.COM "), (2, "cafe\u0301-password"))),
    "signup-local-part": (SIGN_UP, message((1, "ada.lovelace@example.com"), (2, "Ada.Lovelace"))),
    "signup-common": (SIGN_UP, message((1, "ada@example.com"), (2, "Password123"))),
    "signup-bad": (SIGN_UP, message((1, "not-an-email"), (2, "short"))),
    "login-ok": (LOGIN, message((1, "ada@example.com"), (2, "correct horse battery"))),
    "login-control": (LOGIN, message((1, "ada\u0000@example.com"), (2, "x"))),
    "current-user": (CURRENT, b""),
    "create-ok": (CREATE, message((1, "Write the report"), (2, "Quarterly numbers"),
                                  (3, timestamp(1764608400, 123456789)), (4, TASK_ID))),
    "create-edges": (CREATE, message((1, " " + "é" * 200 + "\t"), (2, "line one\r\n\tline two"),
                                     (3, timestamp(253402300799, 999999999)), (4, "!" * 128))),
    "create-too-long": (CREATE, message((1, "x" * 201), (2, "y" * 10001), (3, timestamp(-62135596801)),
                                        (4, "z" * 129))),
    "create-control": (CREATE, message((1, "two\nlines"), (2, "nul\u0000"), (4, "has space"))),
    "get-ok": (GET, message((1, TASK_ID))),
    "get-braced": (GET, message((1, " {" + TASK_ID.upper() + "} "))),
    "list-ok": (LIST, message((1, 10), (2, "AQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), (3, True))),
    "list-negative": (LIST, message((1, -1))),
    "list-huge": (LIST, message((1, 2**31 - 1))),
    "update-ok": (UPDATE, message((1, TASK_ID), (4, True), (7, '"1"'))),
    "update-all": (UPDATE, message((1, TASK_ID), (2, "New title"), (3, "New description"), (4, False),
                                   (5, timestamp(1764608400)), (7, "2"))),
    "update-conflict": (UPDATE, message((1, TASK_ID), (5, timestamp(0)), (6, True))),
    "update-clear": (UPDATE, message((1, TASK_ID), (6, True), (7, "bogus"))),
    "update-nothing": (UPDATE, message((1, TASK_ID))),
    "delete-ok": (DELETE, message((1, TASK_ID), (2, '"3"'))),
}

headers = [
    b"Bearer $T",
    b"bearer   $T  ",
    b"BEARER $T\nBearer x",
    b"Bearer",
    b"Bearer \t",
    b"Basic dXNlcjpwYXNz",
    b"$T",
    b"Bearer\t$T",
    b"Bearer $T.",
    b"Bearer $Tx",
]


def write(target, name, data):
    directory = HERE / target
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(data)


for name, (selector, body) in requests.items():
    write("request_validation", name, bytes([selector]) + body)
for data in headers:
    write("auth_header", hashlib.sha1(data).hexdigest()[:16], data)
