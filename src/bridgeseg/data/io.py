"""Reading and writing images and label PNGs, with errors that name the file.

Images are read as (H, W, 3) uint8 RGB whatever their kind (``image_to_rgb``): 8-bit colour and
grayscale as stored; 16-bit grayscale (modes "I;16*", or "I" with values 0..65535) scaled to 8
bits by ``round(v / 257)`` (Pillow reduces 16-bit colour PNGs to their high byte itself);
palette, 1-bit, CMYK and YCbCr converted by Pillow; an EXIF orientation applied, so that the
array is the picture as a viewer shows it; transparency (RGBA, LA, a palette's transparent
colour) composited onto white, so that transparent pixels do not show whatever colour they
happen to store. Floating-point and other modes are refused with the file named.

Label PNGs hold class (or instance) indices, 255 = void. Palette ("P") and grayscale ("L", "I;16",
"I") PNGs are read as their raw indices; RGB colour-coded PNGs are decoded through a colour
table (the VOC palette by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

VOID = 255
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
CONVERTED_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")


class ImageKindError(ValueError):
    """An image file that is readable but of a kind bridgeseg does not read (the message names it)."""


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: (num_colors, 3) uint8, index 255 is (224, 224, 192)."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


def _sixteen_bit_gray(image: Image.Image, name: str) -> np.ndarray:
    """(H, W, 3) uint8 of a 16-bit grayscale image: each value v in 0..65535 becomes round(v / 257)."""
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageKindError(f"image {name} is a 32-bit integer image (values {values.min()}..{values.max()}); "
                         "bridgeseg reads 8- and 16-bit images: save it as an 8- or 16-bit PNG")
    gray = ((values + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _on_white(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an image with transparency, composited onto a white background."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))


def image_to_rgb(image: Image.Image, name: str = "the image") -> np.ndarray:
    """An opened (loaded) Pillow image as the (H, W, 3) uint8 RGB picture a viewer shows (see the
    module docstring for each kind); ``name`` (the file) is used in errors.

    Raises:
        ImageKindError (a ValueError): a mode bridgeseg does not read (floating point, 32-bit integers, LAB, HSV, ...).
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return _sixteen_bit_gray(image, name)
    if mode in TRANSPARENT_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        return _on_white(image)
    if mode in CONVERTED_MODES:
        return np.asarray(image.convert("RGB"))
    kind = "floating-point values" if mode == "F" else f"image mode {mode}"
    raise ImageKindError(f"image {name} holds {kind}, which bridgeseg does not read; save it as an 8- or 16-bit "
                     "RGB or grayscale PNG (or a JPEG)")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (``image_to_rgb``); errors name the file."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return image_to_rgb(image, str(path))
    except ImageKindError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {path} is larger than Pillow's decompression-bomb limit ({error}); "
                         "if the file is trusted, resize it") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {path} is corrupt or not an image ({error}); replace or remove it") from error


def read_label(path: str | Path, colors: np.ndarray | None = None) -> np.ndarray:
    """Read a label PNG as an (H, W) int64 array of indices.

    Args:
        path: a palette, grayscale or 16-bit PNG of indices, or an RGB colour-coded PNG.
        colors: (K, 3) uint8 colour of each index for RGB PNGs; defaults to the VOC palette, whose
            index 255 is the void colour. An RGB colour not in the table is an error.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"label file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"label file {path} is corrupt or not an image ({error}); replace or remove it") from error
    if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return array.astype(np.int64)
    if mode in ("RGB", "RGBA"):
        return _decode_colors(array[..., :3], voc_palette() if colors is None else colors, path)
    raise ValueError(f"label file {path} has image mode {mode}; expected a palette, grayscale or RGB PNG")


def _decode_colors(rgb: np.ndarray, colors: np.ndarray, path: Path) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1].astype(np.int64) << 8) | colors[:, 2]
    unique, inverse = np.unique(codes, return_inverse=True)
    lookup = {int(code): index for index, code in reversed(list(enumerate(table)))}
    indices = np.empty(len(unique), dtype=np.int64)
    for position, code in enumerate(unique):
        if int(code) not in lookup:
            color = (int(code >> 16) & 255, int(code >> 8) & 255, int(code) & 255)
            raise ValueError(f"label file {path} has colour {color}, which is no class colour; "
                             "fix the file or give the colour table of your classes")
        indices[position] = lookup[int(code)]
    return indices[inverse].reshape(rgb.shape[:2])


def write_label(path: str | Path, label: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write an (H, W) array of indices 0..255 as a palette PNG (VOC palette by default)."""
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"cannot write {path}: label values must lie in 0..255")
    image = Image.fromarray(label.astype(np.uint8))  # mode "L"; putpalette turns it into "P"
    image.putpalette((voc_palette() if palette is None else palette).reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def is_list_path(split: str) -> bool:
    """Whether a split name is really the path of a list file (``.txt`` or with a folder in it)."""
    return split.endswith(".txt") or "/" in split or "\\" in split


def read_id_list(path: str | Path, allow_empty: bool = False) -> list[str]:
    """Image ids of a list file: the first word of every non-empty line.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file lists no id (unless ``allow_empty``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist; give a text file with one image id per line")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids and not allow_empty:
        raise ValueError(f"split list {path} is empty; it must hold one image id per line")
    return ids


def read_split_stems(path: str | Path) -> list[str]:
    """Image stems of a split list file: one id (or path) per line, first column; Cityscapes'
    ``_leftImg8bit`` suffix is dropped so that stems match label and prediction files."""
    return [Path(name).name.removesuffix("_leftImg8bit") for name in read_id_list(path, allow_empty=True)]
