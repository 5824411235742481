"""Every kind of image file is read as the picture a viewer shows, or refused with the file named
(issue 14, case 1): 8- and 16-bit, palette, grayscale, 1-bit, RGBA / LA / palette transparency,
CMYK, EXIF-rotated JPEGs; floating-point and 32-bit images are refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from bridgeseg.checkpoint import save_checkpoint
from bridgeseg.cli import main
from bridgeseg.config import load_config, resolve_config_path
from bridgeseg.data.io import read_image
from bridgeseg.models.build import build_model

RAMP = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5  # 0..235, every value distinct


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def png_16bit_rgb(path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): signature, IHDR, IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb16.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_8_bit_rgb_and_grayscale_are_read_as_stored(tmp_path):
    rgb = np.stack([RAMP, 255 - RAMP, RAMP // 2], axis=2)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(RAMP).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(RAMP > 100).save(tmp_path / "bits.png")  # mode 1
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "gray.png"), gray3(RAMP))
    assert np.array_equal(read_image(tmp_path / "bits.png"), gray3(np.where(RAMP > 100, 255, 0).astype(np.uint8)))


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    """The bug: convert("RGB") clipped every 16-bit value to 255, a white image."""
    Image.fromarray(RAMP.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # v * 257: exactly v after scaling
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.array_equal(read_image(tmp_path / "gray16.png"), gray3(RAMP))
    Image.fromarray(np.array([[0, 128, 129, 385, 65535]], dtype=np.uint16)).save(tmp_path / "round.png")
    assert read_image(tmp_path / "round.png")[0, :, 0].tolist() == [0, 0, 1, 1, 255]  # round(v / 257)


def test_16_bit_rgb_keeps_its_colours(tmp_path):
    rgb = np.stack([RAMP, 255 - RAMP, RAMP // 2], axis=2)
    png_16bit_rgb(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257)
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), rgb)


def test_palette_images_are_read_through_their_palette(tmp_path):
    palette = np.zeros((256, 3), np.uint8)
    palette[:4] = [(10, 20, 30), (200, 0, 0), (0, 200, 0), (0, 0, 200)]
    indices = (RAMP % 4).astype(np.uint8)
    image = Image.fromarray(indices, mode="L")
    image.putpalette(palette.reshape(-1).tolist())
    image.save(tmp_path / "palette.png")
    assert np.array_equal(read_image(tmp_path / "palette.png"), palette[indices])
    image.save(tmp_path / "transparent.png", transparency=0)  # index 0 is the transparent colour
    expected = palette[indices].copy()
    expected[indices == 0] = 255  # composited onto white, not the colour the index stores
    assert np.array_equal(read_image(tmp_path / "transparent.png"), expected)


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[..., 3] = [[255, 0, 51], [255, 255, 0]]  # opaque, transparent, 20 % opaque
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image[0, 0].tolist() == [200, 100, 0] and image[0, 1].tolist() == [255, 255, 255]
    assert image[0, 2].tolist() == pytest.approx([244, 224, 204], abs=1)  # 0.2 colour + 0.8 white
    la = np.stack([np.full((2, 3), 40, np.uint8), rgba[..., 3]], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png")[0, :2].tolist() == [[40, 40, 40], [255, 255, 255]]


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)  # pure red in CMYK
    image = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - [255, 0, 0]).max() <= 8


def test_exif_orientation_is_applied(tmp_path):
    """A camera JPEG stored landscape with orientation 6 ("rotate 90 degrees clockwise to show")."""
    rgb = np.stack([RAMP, 255 - RAMP, RAMP // 2], axis=2)
    Image.fromarray(rgb).save(tmp_path / "plain.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    stored = read_image(tmp_path / "plain.jpg")  # the same pixel data without the tag
    shown = read_image(tmp_path / "rotated.jpg")
    assert shown.shape == (8, 6, 3)
    assert np.array_equal(shown, np.rot90(stored, k=-1))  # clockwise


@pytest.mark.parametrize("kind", ["float", "int32"])
def test_unreadable_kinds_are_refused_with_the_file_named(tmp_path, kind):
    if kind == "float":
        Image.fromarray(RAMP.astype(np.float32) / 255, mode="F").save(tmp_path / "image.tif")
        words = "floating-point"
    else:
        Image.fromarray(RAMP.astype(np.int32) * 100_000, mode="I").save(tmp_path / "image.tif")
        words = "32-bit integer"
    with pytest.raises(ValueError, match=f"image.tif.*{words}.*8- or 16-bit"):
        read_image(tmp_path / "image.tif")


def random_checkpoint(path, root):
    """A joint network with random weights, saved as a training checkpoint (predicting needs no training)."""
    config = load_config(resolve_config_path("demo"), [f"data.root={root}", "model.arch=joint", "model.depth=18",
                                                      "model.output_stride=16", "model.kernel=3", "model.dilation=1"])
    names = ["background", "circle", "square", "triangle", "cross", "star"]
    save_checkpoint({"model": build_model(config.model, len(names), load_weights=False).state_dict(),
                     "config": config.to_dict(), "class_names": names}, path)
    return path


def test_predict_sees_a_16_bit_png_as_its_8_bit_twin(tmp_path, synthetic_root):
    """Through the CLI: the overlay (which shows the image read) of a 16-bit PNG is that of the same
    picture in 8 bits, not of a white image."""
    checkpoint = random_checkpoint(tmp_path / "random.pt", synthetic_root)
    gray = np.asarray(Image.open(sorted((synthetic_root / "JPEGImages").glob("val_*.jpg"))[0]).convert("L"))
    Image.fromarray(gray).save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "eight.png"),
                 str(tmp_path / "sixteen.png"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    eight, sixteen = (np.asarray(Image.open(tmp_path / "out" / f"{stem}_overlay.png")) for stem in ("eight", "sixteen"))
    assert np.array_equal(eight, sixteen)
