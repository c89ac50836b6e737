"""The optimization flow (issue 11): pruning with fine-tuning (prune.py, needs the `train`
extra), neuron elimination without retraining (eliminate.py), the staged flow and its report
(flow.py, report.py) over the datasets of data.py."""

from dpukit.optimize.data import Dataset, Split, accuracy_onnx, load_dataset
from dpukit.optimize.eliminate import choose, eliminable_layers, eliminate, sweep
from dpukit.optimize.flow import Flow, FlowOptions, Stage
from dpukit.optimize.report import render, write_report

__all__ = [
    "Dataset", "Flow", "FlowOptions", "Split", "Stage", "accuracy_onnx", "choose",
    "eliminable_layers", "eliminate", "load_dataset", "render", "sweep", "write_report",
]  # fmt: skip
