"""Classify a folder of images on the DPU, written as DPU-PYNQ's notebooks are.

The code of DPU-PYNQ's dpu_resnet50 and dpu_mnist_classifier notebooks as a script: the
overlay, `load_model`, the VART runner, one float32 input and one output buffer reused for
every image, OpenCV preprocessing (resize the shorter side keeping the aspect ratio, central
crop, normalize), softmax and top-1 on the host. The DpuOverlay import below is the only
line that names the package it comes from; with DPU-PYNQ on the board, it is
`from pynq_dpu import DpuOverlay` and the model an .xmodel.

    python dpu_pynq_classify.py MODEL IMAGE_FOLDER [--overlay dpu.bit] [--resize-shorter N]
        [--interpolation area|linear|nearest|cubic] [--scale S] [--mean M [M M]]
        [--std S [S S]] [--bgr]

The input is (pixel * scale - mean) / std, one mean and std or one per channel in the
model's channel order (RGB unless --bgr; gray for a one-channel model). Prints one line
per image file below IMAGE_FOLDER, "<path below the folder> <top-1 index>", sorted by path,
then "<n> images classified".
"""

import argparse
import os
import sys

import cv2
import numpy as np

from dpukit.compat.pynq_dpu import DpuOverlay  # DPU-PYNQ: from pynq_dpu import DpuOverlay

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# Preprocessing: these functions make sure the DPU can take input images of any size.
def resize_shortest_edge(image, size, crop_height, crop_width, interpolation="area"):
    """Resize so that the shorter side is `size`, keeping the aspect ratio (never smaller
    than the crop)."""
    H, W = image.shape[:2]
    k = size / min(H, W)
    nH = max(crop_height, round(H * k))
    nW = max(crop_width, round(W * k))
    return cv2.resize(image, (nW, nH), interpolation=INTERPOLATIONS[interpolation])


def central_crop(image, crop_height, crop_width):
    image_height = image.shape[0]
    image_width = image.shape[1]
    offset_height = (image_height - crop_height) // 2
    offset_width = (image_width - crop_width) // 2
    return image[
        offset_height : offset_height + crop_height, offset_width : offset_width + crop_width
    ]


def BGR2RGB(image):
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def normalize(image, scale, means, stds):
    """(pixel * scale - mean) / std, in float32."""
    image = image.astype(np.float32) * np.float32(scale)
    return (image - np.asarray(means, np.float32)) / np.asarray(stds, np.float32)


def preprocess_fn(image, crop_height, crop_width, args):
    """An OpenCV image (BGR, or gray) as the model's input: [crop_height, crop_width, C]."""
    if args.resize_shorter:
        image = resize_shortest_edge(
            image, args.resize_shorter, crop_height, crop_width, args.interpolation
        )
        image = central_crop(image, crop_height, crop_width)
    elif image.shape[:2] != (crop_height, crop_width):
        image = cv2.resize(
            image, (crop_width, crop_height), interpolation=INTERPOLATIONS[args.interpolation]
        )
    if image.ndim == 3 and not args.bgr:
        image = BGR2RGB(image)
    return normalize(image, args.scale, args.mean, args.std)


# Postprocessing on the host
def calculate_softmax(data):
    result = np.exp(data - np.max(data))
    return result / result.sum()


def list_images(image_folder):
    """The image files below `image_folder` (class folders too), as sorted relative paths."""
    original_images = []
    for root, dirs, files in os.walk(image_folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.relpath(os.path.join(root, name), image_folder)
                original_images.append(path.replace(os.sep, "/"))
    return sorted(original_images)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Classify a folder of images on the DPU.")
    parser.add_argument("model", help="the compiled model (DPU-PYNQ: an .xmodel)")
    parser.add_argument("image_folder", help="a folder of images (class folders allowed)")
    parser.add_argument("--overlay", default="dpu.bit", help="the DPU overlay (default dpu.bit)")
    parser.add_argument(
        "--resize-shorter",
        type=int,
        default=0,
        metavar="N",
        help="resize the shorter side to N (aspect ratio kept), then crop the model's input "
        "size from the center; default: resize straight to the input size",
    )
    parser.add_argument("--interpolation", choices=list(INTERPOLATIONS), default="area")
    parser.add_argument("--scale", type=float, default=1 / 255, help="default 1/255")
    parser.add_argument("--mean", type=float, nargs="+", default=[0.0], metavar="M")
    parser.add_argument("--std", type=float, nargs="+", default=[1.0], metavar="S")
    parser.add_argument(
        "--bgr", action="store_true", help="the model takes BGR (OpenCV's order), not RGB"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    # 1. Prepare the overlay and load the model
    overlay = DpuOverlay(args.overlay)
    overlay.load_model(args.model)

    # 2. Use VART
    dpu = overlay.runner

    inputTensors = dpu.get_input_tensors()
    outputTensors = dpu.get_output_tensors()

    shapeIn = tuple(inputTensors[0].dims)
    shapeOut = tuple(outputTensors[0].dims)
    outputSize = int(outputTensors[0].get_data_size() / shapeIn[0])

    softmax = np.empty(outputSize)

    # buffers for the input and output data, reused for every image
    output_data = [np.empty(shapeOut, dtype=np.float32, order="C")]
    input_data = [np.empty(shapeIn, dtype=np.float32, order="C")]
    image = input_data[0]

    crop_height, crop_width, channels = shapeIn[1:]
    for what, values in (("--mean", args.mean), ("--std", args.std)):
        if len(values) not in (1, channels):
            sys.exit(f"{what}: give one value or {channels} (one per channel)")
    read_flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR

    # 3. Run the DPU on every image of the folder
    original_images = list_images(args.image_folder)
    total_images = 0
    for name in original_images:
        picture = cv2.imread(os.path.join(args.image_folder, name), read_flag)
        if picture is None:
            print(f"skipped {name}: not a readable image", file=sys.stderr)
            continue
        preprocessed = preprocess_fn(picture, crop_height, crop_width, args)
        image[0, ...] = preprocessed.reshape(shapeIn[1:])
        job_id = dpu.execute_async(input_data, output_data)
        dpu.wait(job_id)
        temp = [j.reshape(1, outputSize) for j in output_data]
        softmax = calculate_softmax(temp[0][0])
        print(name, int(np.argmax(softmax)))
        total_images += 1
    print(f"{total_images} images classified")

    # 4. Clean up
    del overlay
    del dpu


if __name__ == "__main__":
    main(sys.argv[1:])
