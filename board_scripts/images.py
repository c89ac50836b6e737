"""A folder of labelled images, in the two common layouts:

    DIR/cat/0001.jpg, DIR/dog/x/0002.png   the class is the first folder under DIR
    DIR/cat.123.jpg, DIR/dog.7.png         Kaggle style: the class is the name up to its
                                           first dot (DIR/123.jpg has no class: it runs,
                                           but counts for no accuracy)

Both may mix. Hidden files and folders (a leading dot) are ignored; any other file without
an image extension is counted as skipped, not an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dpukit.errors import ExecutionError

IMAGE_EXTENSIONS = frozenset(
    (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm",
     ".pbm", ".pnm")
)  # fmt: skip


@dataclass
class ImageFile:
    path: Path
    name: str  # the path below the folder, with / separators (for reports)
    class_name: str | None  # None: the file's name carries no class


@dataclass
class ImageFolder:
    root: Path
    images: list[ImageFile]
    not_images: list[str] = field(default_factory=list)  # files skipped for their extension

    @property
    def class_names(self) -> list[str]:
        """The classes found, sorted (numerically when every name is a number)."""
        names = {im.class_name for im in self.images if im.class_name is not None}
        if all(n.isdigit() for n in names):
            return sorted(names, key=lambda n: (int(n), n))
        return sorted(names)


def scan(root: str | Path) -> ImageFolder:
    """The image files under `root` (sorted by path) with their classes; an error if there
    is no such folder or it holds no image file."""
    root = Path(root)
    if not root.exists():
        raise ExecutionError(f"{root}: no such image folder")
    if not root.is_dir():
        raise ExecutionError(f"{root}: not a folder; give a folder of images (class/x.jpg)")
    images: list[ImageFile] = []
    not_images: list[str] = []
    for folder, dirs, files in os.walk(root, onerror=_raise_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        below = here.relative_to(root).parts
        for name in sorted(f for f in files if not f.startswith(".")):
            rel = "/".join((*below, name))
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                not_images.append(rel)
                continue
            images.append(ImageFile(here / name, rel, below[0] if below else _prefix_class(name)))
    if not images:
        what = f"only {len(not_images)} file(s) that are not images" if not_images else "nothing"
        raise ExecutionError(
            f"{root}: no images in this folder (it holds {what}); expected class/x.jpg or "
            "Kaggle-style class.123.jpg files"
        )
    return ImageFolder(root, images, not_images)


def _prefix_class(name: str) -> str | None:
    """`cat.123.jpg` -> "cat"; `123.jpg` -> None."""
    stem = name.rsplit(".", 1)[0]
    if "." not in stem:
        return None
    return stem.split(".", 1)[0] or None


def _raise_walk_error(exc: OSError) -> None:
    raise ExecutionError(
        f"{exc.filename}: cannot list the image folder ({exc.strerror or exc})"
    ) from None


def class_order(folder: ImageFolder, labels: list[str] | None, outputs: int) -> list[str]:
    """The class names in the order of the model's output scores: `labels` (the program's or
    the command line's list) if given, else the sorted class names. A class missing from
    `labels`, or more classes than the model scores, is an error."""
    found = folder.class_names
    if labels is not None:
        missing = [c for c in found if c not in labels]
        if missing:
            raise ExecutionError(
                f"{folder.root}: class folder(s)/prefix(es) {', '.join(missing[:10])} are not "
                f"in the labels list ({len(labels)} names: {', '.join(labels[:10])}"
                f"{', ...' if len(labels) > 10 else ''})"
            )
        order = list(labels)
    elif found and all(c.isdigit() for c in found) and max(map(int, found)) < outputs:
        # numbered classes are output indices, even when some are missing from the folder
        named = {int(c): c for c in found}
        order = [named.get(k, str(k)) for k in range(outputs)]
    else:
        order = found
    if len(order) > outputs:
        raise ExecutionError(
            f"{folder.root}: {len(order)} classes, but the program scores {outputs}; give the "
            "labels of its outputs with --labels"
        )
    return order
