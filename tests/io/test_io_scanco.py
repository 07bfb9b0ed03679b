"""AIM / ISQ parsing: every type code, both AIM versions, broken and fuzzed headers.

The files are built here by slow, loop-based encoders written from the format description
(ITKIOScanco / AimIO sources), independent of microarch's own writer, so the reader is
checked against an oracle rather than against itself.
"""

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microarch.io import CalibrationError, ScanFormatError, read_scan
from microarch.io._scanco import (
    float_to_vax_f,
    parse_processing_log,
    scanco_double,
    vax_f_to_float,
)

# --------------------------------------------------------------------------------------
# oracle encoders
# --------------------------------------------------------------------------------------


def vax_f_reference(x: float) -> bytes:
    """VAX F-float bytes by repeated halving/doubling (slow, obviously correct)."""
    if x == 0:
        return bytes(4)
    sign, m, e = int(x < 0), abs(x), 0
    while m >= 1:
        m, e = m / 2, e + 1
    while m < 0.5:
        m, e = m * 2, e - 1
    frac = round((m - 0.5) * 2**24)
    if frac == 2**23:
        frac, e = 0, e + 1
    bits = (sign << 31) | ((e + 128) << 23) | frac
    return struct.pack("<HH", bits >> 16, bits & 0xFFFF)


def scanco_double_bytes(x: float) -> bytes:
    """Inverse of the ITKIOScanco/aimio-py double layout (IEEE of 4x, words swapped)."""
    bits = struct.unpack("<Q", struct.pack("<d", 4.0 * x))[0]
    high, low = bits >> 32, bits & 0xFFFFFFFF
    return struct.pack("<HHHH", high >> 16, high & 0xFFFF, low >> 16, low & 0xFFFF)


LOG = (
    "!\n! Processing Log\n!\n"
    "Mu_Scaling                                       8192\n"
    "Density: unit                 mg HA/ccm\n"
    "Density: slope                         1.60351904e+03\n"
    "Density: intercept                    -3.91209015e+02\n"
    "HU: mu water                                  0.24090\n"
)


def make_aim(type_code, data: bytes, dims_xyz, *, version=2, spacing=0.0607,
             position=(0, 0, 0), offset=(0, 0, 0), log=LOG) -> bytes:
    """An AIM file around ``data`` (already encoded)."""
    log_bytes = log.encode("latin-1")
    if version == 2:
        pre = struct.pack("<5i", 20, 140, len(log_bytes), len(data), 0)
        image = struct.pack("<6i", 16, 0, 0, 0, 0, type_code)
        image += struct.pack("<21i", *position, *dims_xyz, *offset, *([0] * 12))
        image += b"".join(vax_f_reference(spacing) for _ in range(3)) + bytes(20)
        assert len(image) == 140
        return pre + image + log_bytes + data
    magic = b"AIMDATA_V030   \x00"
    pre = struct.pack("<5q", 40, 224, len(log_bytes), len(data), 0)
    image = struct.pack("<4i", 0, 0, 0, type_code)
    image += struct.pack("<24q", *position, *dims_xyz, *offset, *([0] * 12),
                         *([round(spacing * 1e6)] * 3))
    image += bytes(16)
    assert len(image) == 224
    return magic + pre + image + log_bytes + data


def encode_bincmp(flat: np.ndarray, int_size=4) -> bytes:
    values = [int(flat[0]), 0]
    for v in flat:
        if int(v) != values[0]:
            values[1] = int(v)
            break
    runs = []
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i]:
            j += 1
        length = j - i
        while length > 254:
            runs.append(255)  # 254 voxels, value kept
            length -= 254
        runs.append(length)
        i = j
    body = struct.pack("<2b", *values) + bytes(runs)
    size = len(body) + int_size
    return size.to_bytes(int_size, "little") + body


def encode_charcmp(flat: np.ndarray, value_first=True, int_size=4) -> bytes:
    pairs = []
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i] and j - i < 255:
            j += 1
        value, length = int(flat[i]) & 0xFF, j - i
        pairs += [value, length] if value_first else [length, value]
        i = j
    size = len(pairs) + int_size
    return size.to_bytes(int_size, "little") + bytes(pairs)


def encode_bit8(volume: np.ndarray, value=127) -> bytes:
    nz, ny, nx = volume.shape
    cx, cy, cz = (nx + 1) // 2, (ny + 1) // 2, (nz + 1) // 2
    blocks = bytearray(cx * cy * cz)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if volume[z, y, x]:
                    index = x // 2 + cx * (y // 2 + cy * (z // 2))
                    blocks[index] |= 1 << ((z % 2) * 4 + (y % 2) * 2 + (x % 2))
    return bytes(blocks) + bytes([value])


def write(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def blobby_mask(shape, seed=0):
    """A random two-valued volume with long runs (exercises the 255 run code)."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, dtype=np.int8)
    volume[:, : shape[1] // 2] = 127
    flips = rng.random(shape) < 0.05
    volume[flips] = 127 - volume[flips]
    return volume


# --------------------------------------------------------------------------------------
# number formats
# --------------------------------------------------------------------------------------


@given(st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32, allow_subnormal=False))
def test_vax_f_encoding_matches_reference_and_round_trips(x):
    assert float_to_vax_f(x) == vax_f_reference(x)
    back = vax_f_to_float(np.frombuffer(float_to_vax_f(x), dtype=np.uint8))[0]
    assert back == x


def test_vax_f_known_values(scanco_dir):
    assert vax_f_reference(1.0) == bytes([0x80, 0x40, 0, 0])  # 0.5 * 2**1, exponent 129
    assert float_to_vax_f(1.0) == bytes([0x80, 0x40, 0, 0])
    # element size of BonelabData aluminum.aim, bytes 128..140 of the file
    raw = (scanco_dir / "aluminum.aim").read_bytes()[128:140]
    np.testing.assert_array_equal(vax_f_to_float(np.frombuffer(raw, np.uint8)),
                                  [np.float32(0.082)] * 3)
    reserved = vax_f_to_float(np.frombuffer(bytes([0, 0x80, 0, 0]), np.uint8))[0]
    assert math.isnan(reserved)  # sign set, exponent 0: VAX reserved operand
    assert vax_f_to_float(np.frombuffer(bytes(4), np.uint8))[0] == 0.0


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_scanco_double_round_trip(x):
    assert scanco_double(scanco_double_bytes(x)) == x


# --------------------------------------------------------------------------------------
# every type code
# --------------------------------------------------------------------------------------

RAW_TYPES = [
    (0x00020002, "<i2", np.int16),
    (0x00010001, "i1", np.int8),
    (0x00160001, "u1", np.uint8),
    (0x000D0001, "u1", np.uint8),
    (0x00170002, "<u2", np.uint16),
    (0x00030004, "<i4", np.int32),
]


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("code,disk,dtype", RAW_TYPES)
def test_uncompressed_types(tmp_path, version, code, disk, dtype):
    rng = np.random.default_rng(code)
    info = np.iinfo(dtype)
    volume = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    content = make_aim(code, volume.astype(disk).tobytes(), (5, 4, 3), version=version,
                       spacing=0.0607, position=(3, 4, 5))
    scan = read_scan(write(tmp_path, "x.aim", content), units="native")
    assert scan.format == f"AIM v0{version}0"
    assert scan.image.dtype == dtype
    np.testing.assert_array_equal(scan.image, volume)
    assert scan.spacing == pytest.approx((0.0607,) * 3, rel=1e-7)
    assert scan.origin == pytest.approx((5 * 0.0607, 4 * 0.0607, 3 * 0.0607))
    assert scan.meta["type_code"] == code


def test_int16_v030_is_calibrated_like_v020(tmp_path):
    volume = np.arange(60, dtype=np.int16).reshape(3, 4, 5) * 100
    v2 = read_scan(write(tmp_path, "a.aim", make_aim(0x00020002, volume.tobytes(), (5, 4, 3))))
    v3 = read_scan(write(tmp_path, "b.aim",
                         make_aim(0x00020002, volume.tobytes(), (5, 4, 3), version=3)))
    expected = 1603.51904 / 8192 * volume.astype(np.float64) - 391.209015
    for scan in (v2, v3):
        assert scan.units == "mg HA/cm³"
        np.testing.assert_allclose(scan.image, expected, atol=1e-3)


@pytest.mark.parametrize("version", [2, 3])
def test_float_types(tmp_path, version):
    volume = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5) * 3.25
    if version == 2:
        data = b"".join(vax_f_reference(float(v)) for v in volume.ravel())
    else:
        data = volume.astype("<f4").tobytes()
    scan = read_scan(write(tmp_path, "f.aim",
                           make_aim(0x001A0004, data, (4, 3, 2), version=version)),
                     units="native")
    assert scan.image.dtype == np.float32
    np.testing.assert_array_equal(scan.image, volume)


def test_float_v020_in_ieee_recognised_by_the_logged_range(tmp_path):
    volume = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5) * 3.25
    log = (f"Minimum data value            {volume.min():>23.5f}\n"
           f"Maximum data value            {volume.max():>23.5f}\n")
    content = make_aim(0x001A0004, volume.astype("<f4").tobytes(), (4, 3, 2), log=log)
    scan = read_scan(write(tmp_path, "f.aim", content), units="native")
    assert scan.meta["float_encoding"] == "IEEE"
    np.testing.assert_array_equal(scan.image, volume)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("shape", [(3, 4, 5), (7, 30, 41)])
def test_run_length_binary(tmp_path, version, shape):
    volume = blobby_mask(shape)
    data = encode_bincmp(volume.ravel(), int_size=4 if version == 2 else 8)
    content = make_aim(0x00150001, data, shape[::-1], version=version)
    scan = read_scan(write(tmp_path, "seg.aim", content))
    assert scan.units == "binary"
    assert scan.image.dtype == np.int8
    np.testing.assert_array_equal(scan.image, volume)


def test_run_length_binary_with_offset_border(tmp_path):
    # AimIO convention: the stream holds the (dims - 2 * offset) interior only.
    inner = blobby_mask((3, 4, 5), seed=3)
    content = make_aim(0x00150001, encode_bincmp(inner.ravel()), (7, 6, 5), offset=(1, 1, 1))
    scan = read_scan(write(tmp_path, "off.aim", content))
    expected = np.zeros((5, 6, 7), dtype=np.int8)
    expected[1:-1, 1:-1, 1:-1] = inner
    np.testing.assert_array_equal(scan.image, expected)
    assert scan.meta["restored_offset_border"]


def test_run_length_binary_with_offset_but_full_stream(tmp_path):
    # ITKIOScanco convention: offsets ignored, the stream covers the whole volume.
    volume = blobby_mask((5, 6, 7), seed=4)
    content = make_aim(0x00150001, encode_bincmp(volume.ravel()), (7, 6, 5), offset=(1, 1, 1))
    np.testing.assert_array_equal(read_scan(write(tmp_path, "o.aim", content)).image, volume)


def test_run_length_binary_byte_count_is_ignored(tmp_path):
    # BonelabData test25a.aim stores the count big-endian; the pre-header length rules.
    volume = blobby_mask((4, 5, 6), seed=5)
    data = bytearray(encode_bincmp(volume.ravel()))
    data[:4] = len(data).to_bytes(4, "big")
    content = make_aim(0x00150001, bytes(data), (6, 5, 4))
    np.testing.assert_array_equal(read_scan(write(tmp_path, "be.aim", content)).image, volume)


@pytest.mark.parametrize("value_first", [True, False])
@pytest.mark.parametrize("version", [2, 3])
def test_run_length_char(tmp_path, value_first, version):
    rng = np.random.default_rng(7)
    volume = np.repeat(rng.integers(-3, 4, size=(4, 5, 3)), 6, axis=2).astype(np.int8)
    volume[0, 0, :] = 0
    volume[1] = 5  # a run longer than 255 voxels is split
    data = encode_charcmp(volume.ravel(), value_first, int_size=4 if version == 2 else 8)
    content = make_aim(0x00080002, data, (18, 5, 4), version=version)
    scan = read_scan(write(tmp_path, "c.aim", content))
    assert scan.units == "labels"
    np.testing.assert_array_equal(scan.image, volume)


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 5, 7), (6, 4, 9)])
def test_packed_bits(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.4
    content = make_aim(0x00060001, encode_bit8(mask, value=100), shape[::-1])
    scan = read_scan(write(tmp_path, "b.aim", content))
    assert scan.units == "binary"
    np.testing.assert_array_equal(scan.image, np.where(mask, 100, 0).astype(np.int8))


def test_packed_bits_value_zero_means_127(tmp_path):
    mask = np.ones((2, 3, 3), dtype=bool)
    content = make_aim(0x00060001, encode_bit8(mask, value=0), (3, 3, 2))
    assert set(np.unique(read_scan(write(tmp_path, "b.aim", content)).image)) == {127}


@pytest.mark.parametrize("code,dtype", [(0x00120003, np.uint8), (0x00060003, np.int8)])
def test_vector_types(tmp_path, code, dtype):
    volume = np.arange(2 * 3 * 4 * 3).reshape(2, 3, 4, 3).astype(dtype)
    content = make_aim(code, volume.tobytes(), (4, 3, 2))
    scan = read_scan(write(tmp_path, "v.aim", content))
    assert scan.units == "vector"
    assert scan.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(scan.image, volume)


def test_int16_segmentation_is_recognised_from_the_log(tmp_path):
    volume = np.zeros((3, 4, 5), dtype=np.int16)
    volume[1] = 127
    log = LOG + "Parameter name                Segmented Objects\n"
    scan = read_scan(write(tmp_path, "s.aim", make_aim(0x00020002, volume.tobytes(), (5, 4, 3),
                                                       log=log)))
    assert scan.units == "binary"
    np.testing.assert_array_equal(scan.image, volume)


def test_mu_scaling_without_density_slope(tmp_path):
    volume = np.full((2, 2, 2), 4096, dtype=np.int16)
    log = "Mu_Scaling                                       4096\n"
    path = write(tmp_path, "m.aim", make_aim(0x00020002, volume.tobytes(), (2, 2, 2), log=log))
    assert np.all(read_scan(path, units="mu").image == 1.0)
    with pytest.raises(CalibrationError, match="density"):
        read_scan(path)
    with pytest.raises(CalibrationError, match="HU"):
        read_scan(path, units="hu")


def test_zero_element_size_needs_spacing(tmp_path):
    content = make_aim(0x00020002, bytes(16), (2, 2, 2), spacing=0.0)
    path = write(tmp_path, "z.aim", content)
    with pytest.raises(ScanFormatError, match="voxel size"):
        read_scan(path, units="native")
    assert read_scan(path, units="native", spacing=0.05).spacing == (0.05, 0.05, 0.05)


def test_isq_with_calibration_block(tmp_path):
    volume = (np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 300)
    header = bytearray(_BLOCK * 6)
    header[:16] = b"CTDATA-HEADER_V1"
    struct.pack_into("<i", header, 16, 3)
    struct.pack_into("<6i", header, 44, 4, 3, 2, 4 * 82, 3 * 82, 2 * 82)
    struct.pack_into("<i", header, 88, 8192)
    struct.pack_into("<i", header, 508, 5)  # data after 6 blocks
    header[512 + 8 : 512 + 24] = b"MultiHeader     "
    entry = 1024
    header[entry + 8 : entry + 24] = b"Calibration     "
    struct.pack_into("<i", header, entry + 24, 2)
    cal = 3 * _BLOCK
    header[cal + 28 : cal + 28 + 20] = b"68 kVp, BH: 200 mg  "
    struct.pack_into("<i", header, cal + 632, 2)
    header[cal + 648 : cal + 657] = b"mg HA/ccm"
    header[cal + 664 : cal + 672] = scanco_double_bytes(1603.51904)
    header[cal + 672 : cal + 680] = scanco_double_bytes(-391.209015)
    header[cal + 688 : cal + 696] = scanco_double_bytes(0.2409)
    path = write(tmp_path, "c.isq", bytes(header) + volume.astype("<i2").tobytes())
    scan = read_scan(path)
    assert scan.spacing == pytest.approx((0.082, 0.082, 0.082))
    assert scan.calibration.density_slope == 1603.51904
    assert scan.calibration.mu_water == 0.2409
    assert scan.calibration.description == "68 kVp, BH: 200 mg"
    np.testing.assert_allclose(scan.image, 1603.51904 / 8192 * volume - 391.209015, atol=1e-3)
    np.testing.assert_array_equal(read_scan(path, units="native").image, volume)


_BLOCK = 512


def test_processing_log_parser():
    log = parse_processing_log(
        "!\n! Processing Log\n"
        "Created by                    ISQ_TO_AIM (IPL)                                  \n"
        "Calibration Data              68 kVp, BH: 200 mg HA/ccm, Scaling 8192, 0.2 CU   \n"
        "Minimum data value                         -920.00000\n"
        "Minimum data value                            0.00000\n"
        "           dens in units      mg HA/ccm\n"
        "Null Border                                         0          0          0\n"
        "Cutborder                     False\n"
        "lonely-key\n \n"
    )
    assert log["Created by"] == "ISQ_TO_AIM (IPL)"
    assert log["Calibration Data"] == "68 kVp, BH: 200 mg HA/ccm, Scaling 8192, 0.2 CU"
    assert log["Minimum data value"] == 0.0  # the last occurrence wins
    assert log["dens in units"] == "mg HA/ccm"
    assert log["Null Border"] == (0, 0, 0)
    assert log["Cutborder"] == "False"
    assert log["lonely-key"] == ""


@given(st.text(max_size=400))
def test_processing_log_parser_never_fails(text):
    assert isinstance(parse_processing_log(text), dict)


# --------------------------------------------------------------------------------------
# broken files, made by hand
# --------------------------------------------------------------------------------------

GOOD_INT16 = make_aim(0x00020002, np.arange(60, dtype="<i2").tobytes(), (5, 4, 3))


def _patched(content: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(content)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


BROKEN = {
    "empty": (b"", "empty"),
    "one byte": (b"\x14", "unrecognised"),
    "wrong magic": (b"HELLO WORLD, I AM NO SCAN" * 30, "unrecognised"),
    "truncated pre-header": (GOOD_INT16[:12], "unrecognised|pre-header"),
    "truncated image header": (GOOD_INT16[:100], "claims|ends inside"),
    "truncated data": (GOOD_INT16[:-1], "claims"),
    "log longer than file": (_patched(GOOD_INT16, 8, "<i", 10**6), "claims"),
    "negative log": (_patched(GOOD_INT16, 8, "<i", -5), "negative"),
    "negative data": (_patched(GOOD_INT16, 12, "<i", -5), "negative"),
    "unknown type": (_patched(GOOD_INT16, 40, "<i", 0x00990002), "unknown AIM data type"),
    "zero dimension": (_patched(GOOD_INT16, 56, "<i", 0), "impossible dimensions"),
    "negative dimension": (_patched(GOOD_INT16, 60, "<i", -3), "impossible dimensions"),
    "huge dimensions": (_patched(GOOD_INT16, 56, "<3i", 2**30, 2**30, 2**30), "need"),
    "data shorter than dims": (_patched(GOOD_INT16, 56, "<i", 6), "need"),
    "negative offset": (_patched(GOOD_INT16, 68, "<i", -1), "impossible offset"),
    "offset eats the volume": (_patched(GOOD_INT16, 76, "<i", 2), "impossible offset"),
    "old AIM v011": (_patched(GOOD_INT16, 0, "<2i", 16, 96), "v010/v011"),
    "unknown AIM magic": (b"AIMDATA_V040   \x00" + bytes(300), "unsupported AIM version"),
    "bad v030 struct": (
        _patched(make_aim(0x00020002, bytes(16), (2, 2, 2), version=3), 24, "<q", 200),
        "image header",
    ),
    "ISQ header only": (b"CTDATA-HEADER_V1" + bytes(100), "ends inside"),
    "ISQ truncated data": (
        _patched(b"CTDATA-HEADER_V1" + bytes(496), 16, "<i7i", 3, 0, 0, 0, 0, 0, 0, 0)
        + bytes(10), "impossible|truncated"),
    "NIfTI header only": (struct.pack("<i", 348) + bytes(340) + b"n+1\x00", "NIfTI"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_scan_format_error(tmp_path, name):
    content, message = BROKEN[name]
    path = write(tmp_path, "broken.bin", content)
    with pytest.raises(ScanFormatError, match=message) as info:
        read_scan(path, units="native")
    assert str(path) in str(info.value)


def test_compressed_stream_shorter_than_the_volume(tmp_path):
    volume = blobby_mask((3, 4, 5))
    data = encode_bincmp(volume.ravel())[:-3]
    with pytest.raises(ScanFormatError, match="expands to"):
        read_scan(write(tmp_path, "s.aim", make_aim(0x00150001, data, (5, 4, 3))))
    charcmp = encode_charcmp(volume.ravel())[:-2]
    with pytest.raises(ScanFormatError, match="expands to"):
        read_scan(write(tmp_path, "c.aim", make_aim(0x00080002, charcmp, (5, 4, 3))))
    bit8 = encode_bit8(volume != 0)[:-2]
    with pytest.raises(ScanFormatError, match="packed-bit"):
        read_scan(write(tmp_path, "b.aim", make_aim(0x00060001, bit8, (5, 4, 3))))


def test_lying_huge_compressed_header_does_not_allocate(tmp_path):
    data = encode_bincmp(blobby_mask((3, 4, 5)).ravel())
    content = make_aim(0x00150001, data, (50_000, 50_000, 50_000))
    with pytest.raises(ScanFormatError, match="expands to"):
        read_scan(write(tmp_path, "lie.aim", content))


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_scan(tmp_path / "nope.aim")
    path = write(tmp_path, "ok.aim", GOOD_INT16)
    with pytest.raises(ValueError, match="units"):
        read_scan(path, units="kelvin")
    with pytest.raises(TypeError, match="Calibration"):
        read_scan(path, calibration={"mu_scaling": 8192})
    with pytest.raises(ValueError, match="spacing"):
        read_scan(path, spacing=(1, 2))


# --------------------------------------------------------------------------------------
# fuzzing: any mutation either reads or raises ScanFormatError
# --------------------------------------------------------------------------------------


def _synthetic_seeds():
    mask = blobby_mask((3, 4, 5), seed=9)
    isq = bytearray(_BLOCK)
    isq[:16] = b"CTDATA-HEADER_V1"
    struct.pack_into("<i", isq, 16, 3)
    struct.pack_into("<6i", isq, 44, 5, 4, 3, 300, 240, 180)
    return {
        "int16 v020": GOOD_INT16,
        "int16 v030": make_aim(0x00020002, np.arange(60, dtype="<i2").tobytes(), (5, 4, 3),
                               version=3),
        "bincmp": make_aim(0x00150001, encode_bincmp(mask.ravel()), (5, 4, 3)),
        "bincmp v030": make_aim(0x00150001, encode_bincmp(mask.ravel(), 8), (5, 4, 3),
                                version=3),
        "charcmp": make_aim(0x00080002, encode_charcmp(mask.ravel()), (5, 4, 3)),
        "bit8": make_aim(0x00060001, encode_bit8(mask != 0), (5, 4, 3)),
        "float": make_aim(0x001A0004, bytes(240), (5, 4, 3)),
        "vector": make_aim(0x00120003, bytes(180), (5, 4, 3)),
        "isq": bytes(isq) + np.arange(60, dtype="<i2").tobytes(),
    }


SYNTHETIC = _synthetic_seeds()
REAL = ["test25a.aim", "tube.aim", "test_aim.AIM", "test_isq.ISQ"]


def _mutate(data, content: bytes) -> bytes:
    out = bytearray(content)
    action = data.draw(st.sampled_from(["bytes", "int32", "truncate", "both"]), label="action")
    if action in ("bytes", "both"):
        limit = min(len(out), data.draw(st.sampled_from([64, 180, 700, len(out)])))
        for _ in range(data.draw(st.integers(1, 6), label="n_bytes")):
            at = data.draw(st.integers(0, max(limit - 1, 0)), label="at")
            if out:
                out[at] = data.draw(st.integers(0, 255), label="byte")
    if action == "int32" and len(out) >= 4:
        at = 4 * data.draw(st.integers(0, min(len(out), 200) // 4 - 1), label="field")
        value = data.draw(st.sampled_from([0, 1, -1, 2, 255, 2**31 - 1, -(2**31), 2**20, 140,
                                           20, 0x00150001, 0x001A0004]), label="value")
        struct.pack_into("<i", out, at, value)
    if action in ("truncate", "both"):
        out = out[: data.draw(st.integers(0, len(out)), label="keep")]
    return bytes(out)


def _read_or_format_error(path):
    try:
        scan = read_scan(path)
    except CalibrationError:
        scan = read_scan(path, units="native")
    except ScanFormatError:
        return None
    assert scan.image.ndim in (3, 4)
    assert len(scan.spacing) == 3 and all(s > 0 for s in scan.spacing)
    return scan


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_synthetic_headers(tmp_path_factory, data):
    name = data.draw(st.sampled_from(sorted(SYNTHETIC)), label="seed")
    content = _mutate(data, SYNTHETIC[name])
    path = tmp_path_factory.mktemp("fuzz") / "x.bin"
    path.write_bytes(content)
    _read_or_format_error(path)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_real_headers(scanco_dir, tmp_path_factory, data):
    name = data.draw(st.sampled_from(REAL), label="file")
    content = _mutate(data, (scanco_dir / name).read_bytes())
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(content)
    _read_or_format_error(path)


@settings(max_examples=40, deadline=None)
@given(keep=st.integers(0, 3000))
def test_truncated_aluminum_header(scanco_dir, tmp_path_factory, keep):
    with open(scanco_dir / "aluminum.aim", "rb") as handle:
        content = handle.read(keep)
    path = tmp_path_factory.mktemp("trunc") / "aluminum.aim"
    path.write_bytes(content)
    with pytest.raises(ScanFormatError):
        read_scan(path)


@pytest.mark.parametrize("units,factor,expected", [
    ("[mg HA/ccm]", 1, "density"), ("[1/cm]", 1, "mu"), ("[1/cm]", 8192, "native"),
])
def test_float_aim_values_are_not_calibrated_twice(tmp_path, units, factor, expected):
    values = np.array([-0.5, 0.25, 1.0, 600.0] * 6, dtype=np.float32).reshape(2, 3, 4)
    log = LOG + (f"Parameter name                Something\n"
                 f"Parameter units               {units}\n"
                 f"Scaled by factor              {factor:>23}\n")
    data = b"".join(vax_f_reference(float(v)) for v in values.ravel())
    scan = read_scan(write(tmp_path, "f.aim", make_aim(0x001A0004, data, (4, 3, 2), log=log)))
    assert scan.units == "mg HA/cm³"
    slope, intercept = 1603.51904, -391.209015
    if expected == "density":
        np.testing.assert_array_equal(scan.image, values)
    elif expected == "mu":
        np.testing.assert_allclose(scan.image, slope * values + intercept, rtol=1e-6)
    else:
        np.testing.assert_allclose(scan.image, slope / 8192 * values + intercept, rtol=1e-6)
