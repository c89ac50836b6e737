"""What runs on the board (and, with `--backend golden` or `rtl`, on a laptop):

    python3 -m dpukit.board_scripts.run_images PROGRAM.dpu IMAGES/ --backend pynq \
        --overlay OVERLAY.bit --out report.json [--power SENSORS]

Python 3.10 with numpy < 2 and opencv, as a PYNQ image has them: nothing here imports onnx,
onnxruntime, scikit-learn, rich or tomllib. `dpukit deploy` copies a program, its overlay and
the images to a board over SSH and runs run_images there.
"""
