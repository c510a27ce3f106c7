"""Strict readers for the two formats that carry a caller's identity out of the sidecar.

Both are written from the format's description, not from the sidecar's code, and both refuse
anything that has more than one reading (they raise ValueError), so that a test can say "this
parses to exactly these values" and mean it.
"""


def parse_xfcc(header):
    """X-Forwarded-Client-Cert as Envoy describes it: elements separated by ',', key=value pairs
    by ';', a value either bare (up to the next ';' or ',') or double-quoted, in which '\\' takes
    the next character literally. Returns [[(key, value), ...], ...], one list per element."""
    elements, pairs, i, n = [], [], 0, len(header)
    while True:
        eq = header.find("=", i)
        if eq < 0:
            raise ValueError(f"no '=' after offset {i} in {header!r}")
        key = header[i:eq]
        if not key or any(c in key for c in ',;"\\ '):
            raise ValueError(f"bad key {key!r} in {header!r}")
        i = eq + 1
        if i < n and header[i] == '"':
            i += 1
            value = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value in {header!r}")
                c = header[i]
                i += 1
                if c == '"':
                    break
                if c == "\\":
                    if i >= n:
                        raise ValueError(f"backslash at the end of {header!r}")
                    c = header[i]
                    i += 1
                value.append(c)
            value = "".join(value)
            if i < n and header[i] not in ",;":
                raise ValueError(f"text after a closing quote at {i} in {header!r}")
        else:
            end = i
            while end < n and header[end] not in ",;":
                end += 1
            value = header[i:end]
            if any(c in value for c in '"=\\'):
                raise ValueError(f"bare value {value!r} holds a quote, '=' or '\\'")
            i = end
        pairs.append((key, value))
        if i == n:
            elements.append(pairs)
            return elements
        sep = header[i]
        i += 1
        if sep == ",":
            elements.append(pairs)
            pairs = []


def parse_logfmt(line):
    """One logfmt line: space-separated `key=value` pairs, a value bare (no space, '"' or '=')
    or double-quoted with '\\' escapes ('\\"', '\\\\', '\\xNN', '\\n', '\\t', '\\r'); a word
    without '=' is a key with no value (the timestamp and level before spdlog's message).
    Returns [(key, value or None), ...] in order, repeated keys kept."""
    out, i, n = [], 0, len(line)
    while True:
        while i < n and line[i] == " ":
            i += 1
        if i == n:
            return out
        start = i
        while i < n and line[i] not in ' ="':
            i += 1
        key = line[start:i]
        if not key:
            raise ValueError(f"expected a key at {i} in {line!r}")
        if i == n or line[i] == " ":
            out.append((key, None))
            continue
        if line[i] == '"':
            raise ValueError(f"quote inside key {key!r} in {line!r}")
        i += 1  # '='
        if i < n and line[i] == '"':
            i += 1
            value = []
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted value for {key!r} in {line!r}")
                c = line[i]
                i += 1
                if c == '"':
                    break
                if c == "\\":
                    if i >= n:
                        raise ValueError(f"backslash at the end of {line!r}")
                    c = line[i]
                    i += 1
                    if c == "x":
                        c = chr(int(line[i:i + 2], 16))
                        i += 2
                    else:
                        c = {"n": "\n", "t": "\t", "r": "\r"}.get(c, c)
                value.append(c)
            value = "".join(value)
            if i < n and line[i] != " ":
                raise ValueError(f"text after the closing quote of {key!r} in {line!r}")
        else:
            start = i
            while i < n and line[i] != " ":
                i += 1
            value = line[start:i]
            if '"' in value or "=" in value:
                raise ValueError(f"bare value {value!r} of {key!r} holds a quote or '='")
        out.append((key, value))


def values(pairs, key):
    """Every value of key, in order."""
    return [v for k, v in pairs if k == key]
