"""Protocol Buffers' wire format by hand, for the tests' gRPC messages (there is no protoc
plugin for Python here): varints, length-delimited fields, and a message read as
{field number: value}. Test code only."""


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(data, i):
    """(the varint at data[i:], the index after it)."""
    n, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def string_field(number, text):
    data = text.encode() if isinstance(text, str) else text
    return varint(number << 3 | 2) + varint(len(data)) + data


def read_fields(data):
    """{field number: value} of a message (strings as bytes, varints as ints; a repeated field's
    last value)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        if key & 7 == 0:
            fields[key >> 3], i = read_varint(data, i)
        elif key & 7 == 2:
            n, i = read_varint(data, i)
            fields[key >> 3], i = data[i:i + n], i + n
        else:
            raise ValueError(f"wire type {key & 7}")
    return fields
