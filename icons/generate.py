"""Draws Flotilla's app and tray icons (PNG, RGBA) with the standard library only.

The mark: two white sails over a hull on a rounded square whose colour says the state.

    python3 icons/generate.py      # rewrites the icon files beside this script

Besides the PNGs, `icon.ico` (Windows: the executable's and the installer's icon) and
`icon.icns` (macOS: the app bundle's) hold PNG images at the sizes each system looks for; both
formats take PNG data as it is (Windows Vista and later, macOS 10.7 and later).
"""

import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

APP = (0x1F, 0x6F, 0xEB)
TRAY = {
    "contributing": (0x2D, 0xA4, 0x4E),
    "throttled": (0xBF, 0x87, 0x00),
    "paused": (0x6E, 0x77, 0x81),
    "offline": (0xAF, 0xB8, 0xC1),
    "error": (0xCF, 0x22, 0x2E),
}

# Shapes in a unit square, (x, y) with y down.
SAILS = [
    [(0.48, 0.14), (0.48, 0.64), (0.20, 0.64)],
    [(0.54, 0.22), (0.54, 0.64), (0.80, 0.64)],
]
HULL = [(0.16, 0.70), (0.84, 0.70), (0.72, 0.84), (0.28, 0.84)]


def inside(poly, x, y):
    hit = False
    j = len(poly) - 1
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def in_rounded_square(x, y, r=0.2):
    cx = min(max(x, r), 1 - r)
    cy = min(max(y, r), 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def pixel(colour, x, y, hollow):
    if not in_rounded_square(x, y):
        return None
    if any(inside(p, x, y) for p in SAILS + [HULL]):
        return (255, 255, 255)
    if hollow and in_rounded_square((x - 0.5) / 0.84 + 0.5, (y - 0.5) / 0.84 + 0.5):
        return None
    return colour


def draw(size, colour, hollow=False):
    ss = 4  # samples per pixel side
    rows = []
    for py in range(size):
        row = bytearray([0])  # filter: none
        for px in range(size):
            acc = [0, 0, 0, 0]
            for sy in range(ss):
                for sx in range(ss):
                    x = (px + (sx + 0.5) / ss) / size
                    y = (py + (sy + 0.5) / ss) / size
                    c = pixel(colour, x, y, hollow)
                    if c is not None:
                        acc[0] += c[0]
                        acc[1] += c[1]
                        acc[2] += c[2]
                        acc[3] += 1
            n = acc[3]
            if n:
                row += bytes([acc[0] // n, acc[1] // n, acc[2] // n, 255 * n // (ss * ss)])
            else:
                row += bytes(4)
        rows.append(bytes(row))
    return png(size, size, b"".join(rows))


def png(w, h, raw):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def ico(images):
    """A Windows icon: a directory of (size, PNG) entries, then the PNGs."""
    head = struct.pack("<HHH", 0, 1, len(images))
    offset = len(head) + 16 * len(images)
    entries, blobs = b"", b""
    for size, data in images:
        # A width or height of 256 is written as 0.
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
        blobs += data
    return head + entries + blobs


# The ICNS element types that hold PNG data, by pixel size.
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09"}


def icns(images):
    """A macOS icon family: big-endian (type, length) elements after the file header."""
    body = b"".join(ICNS_TYPES[size] + struct.pack(">I", 8 + len(data)) + data for size, data in images)
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    for name, size in (("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)):
        write(os.path.join(HERE, name), draw(size, APP))
    write(os.path.join(HERE, "icon.ico"), ico([(s, draw(s, APP)) for s in (16, 24, 32, 48, 64, 256)]))
    write(os.path.join(HERE, "icon.icns"), icns([(s, draw(s, APP)) for s in (16, 32, 64, 128, 256, 512)]))
    for state, colour in TRAY.items():
        write(os.path.join(HERE, "tray", f"{state}.png"), draw(64, colour, hollow=state == "offline"))


if __name__ == "__main__":
    main()
