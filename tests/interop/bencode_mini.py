"""Tiny bencode encoder/decoder shared by the interop helper scripts.

Standard library only.  bdecode() keeps byte strings as bytes and turns dict
keys into str (utf-8, or latin-1 when not valid utf-8); bdecode_prefix()
returns (value, end_offset) for data followed by a raw payload (ut_metadata).
"""


def bencode(x):
    if isinstance(x, bool):
        raise TypeError("bool is not bencodable")
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, (bytes, bytearray)):
        return b"%d:%s" % (len(x), bytes(x))
    if isinstance(x, (list, tuple)):
        return b"l" + b"".join(bencode(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted(((k.encode() if isinstance(k, str) else bytes(k)), v) for k, v in x.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(x))


class BdecodeError(ValueError):
    pass


def bdecode_prefix(data, start=0):
    def dec(i):
        c = data[i:i + 1]
        if c == b"i":
            j = data.index(b"e", i)
            return int(data[i + 1:j]), j + 1
        if c == b"l":
            i += 1
            out = []
            while data[i:i + 1] != b"e":
                if i >= len(data):
                    raise BdecodeError("unterminated list")
                v, i = dec(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            i += 1
            out = {}
            while data[i:i + 1] != b"e":
                if i >= len(data):
                    raise BdecodeError("unterminated dict")
                k, i = dec(i)
                if not isinstance(k, bytes):
                    raise BdecodeError("non-string key")
                v, i = dec(i)
                try:
                    ks = k.decode()
                except UnicodeDecodeError:
                    ks = k.decode("latin-1")
                out[ks] = v
            return out, i + 1
        if c.isdigit():
            j = data.index(b":", i)
            n = int(data[i:j])
            s = data[j + 1:j + 1 + n]
            if len(s) != n:
                raise BdecodeError("short string")
            return s, j + 1 + n
        raise BdecodeError("bad byte %r at %d" % (c, i))

    try:
        return dec(start)
    except (ValueError, IndexError) as e:
        raise BdecodeError(str(e))


def bdecode(data):
    v, end = bdecode_prefix(data)
    if end != len(data):
        raise BdecodeError("trailing data")
    return v
