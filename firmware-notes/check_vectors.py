#!/usr/bin/env python3
"""Checks vectors.json from PROTOCOL.md alone, with Python's standard library.

What a Python implementer would write: COBS decoding, CRC-32C, HKDF-SHA256,
the proofs and the frame tags. For every vector it decodes the wire bytes,
checks the CRC (section 3.1), and for authenticated frames the number and the
tag (section 3.5); it re-derives the proofs (6.2) and the frame keys. Prints
one line per failure and exits 1 if there is any.

    python3 firmware-notes/check_vectors.py [vectors.json]
"""
import hashlib
import hmac
import json
import os
import sys


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def cobs_decode(encoded):
    out = bytearray()
    i = 0
    while i < len(encoded):
        code = encoded[i]
        i += 1
        if code == 0 or i + code - 1 > len(encoded):
            raise ValueError('bad COBS')
        out += encoded[i:i + code - 1]
        i += code - 1
        if code < 0xFF and i < len(encoded):
            out.append(0)
    return bytes(out)


def hkdf_sha256(ikm, salt, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b'', b'', 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def main(path):
    with open(path) as f:
        data = json.load(f)
    hs = data['handshake']
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    secret = bytes.fromhex(hs['secretBytes'])
    hello, params = bytes.fromhex(hs['helloBody']), bytes.fromhex(hs['challengeParams'])
    for role, field in (('master', 'masterProof'), ('agent', 'agentProof')):
        proof = hmac.new(secret, b'tether/2 ' + role.encode() + b'\0' + hello + params, hashlib.sha256).hexdigest()
        check(proof == hs[field], f'{role} proof')
    salt = bytes.fromhex(hs['agentNonce'] + hs['masterNonce'])
    keys = {
        'agent': hkdf_sha256(secret, salt, b'tether/2 agent to master'),
        'master': hkdf_sha256(secret, salt, b'tether/2 master to agent'),
    }
    check(keys['agent'].hex() == hs['keys']['agentToMaster'], 'agent-to-master key')
    check(keys['master'].hex() == hs['keys']['masterToAgent'], 'master-to-agent key')

    for v in data['vectors']:
        name = v['name']
        wire = bytes.fromhex(v['hex'])
        check(wire[-1] == 0 and 0 not in wire[:-1], f'{name}: one delimiter, at the end')
        frame = cobs_decode(wire[:-1])
        body = bytes.fromhex(v['body'])
        crc = int.from_bytes(frame[-4:], 'little')
        if v['number'] is None:
            check(frame[:-4] == body, f'{name}: body || CRC')
            check(crc == crc32c(frame[:-4]), f'{name}: CRC over the body')
            continue
        check(frame[:-14] == body, f'{name}: body || number || tag || CRC')
        check(crc == crc32c(frame[:-4], crc32c(b'\x02')), f'{name}: CRC over 0x02 || everything before it')
        low = int.from_bytes(frame[-14:-12], 'little')
        check(low == v['number'] % 65536, f'{name}: the low 16 bits of the number')
        tag = hmac.new(keys[v['from']], v['number'].to_bytes(8, 'little') + body, hashlib.sha256).digest()[:8]
        check(frame[-12:-4] == tag and tag.hex() == v['tag'], f'{name}: tag')
        sequenced = body[0] >= 0x0A
        check(sequenced == (v['message']['type'] not in ('WELCOME', 'ACK', 'NAK', 'PING', 'PONG', 'ERROR')), f'{name}: kind')

    for failure in failures:
        print(f'FAIL {failure}')
    print(f"{len(data['vectors'])} vectors checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == '__main__':
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vectors.json')
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else default))
