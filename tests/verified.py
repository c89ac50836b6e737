"""The one rule every test that compares whole networks with onnxruntime applies.

Only what the hardware guarantees is asserted (DESIGN principle 2): every DPU layer equals
onnxruntime fed the same inputs except 1 LSB at exact rounding ties; end to end, every
difference stays within what ties can explain (dpukit.verify's bound), and the top class
agrees on every sample where ties cannot reach it. Never "N % of the outputs identical":
which ties a model has depends on its weights and inputs, so such a threshold fails at
random.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from dpukit.compiler.program import Program
from dpukit.verify import VerifyReport, verify_model


def assert_verified(
    model: str | Path | onnx.ModelProto,
    inputs: np.ndarray | dict[str, np.ndarray],
    config: str | None = None,
    *,
    program: Program | None = None,
    backend: str = "golden",
) -> VerifyReport:
    """Verify ``model`` compiled for ``config`` (or its compiled ``program``) on ``inputs``
    (stacked along axis 0; an array is the input named "input") under the rule above."""
    feeds = inputs if isinstance(inputs, dict) else {"input": inputs}
    report = verify_model(model, feeds, config, program=program, backend=backend)
    assert report.ok, "\n".join(report.bugs)
    assert report.layers, "no DPU layer was checked"
    for o in report.outputs:
        if o.top1_agree is not None and o.top1_at_risk is not None:
            assert o.top1_agree >= report.samples - o.top1_at_risk, (
                f"output {o.name}: top class differs on {report.samples - o.top1_agree} of "
                f"{report.samples} samples; ties could change it on {o.top1_at_risk}"
            )
    return report


def assert_dpu_stage_within_ties(report_dir: Path, quantized: dict, dpu: dict, test) -> None:
    """A flow's DPU stage against its quantized stage (stage dicts of report.json's
    "stages", models relative to `report_dir`) on the test split it scored: the program
    verified against the quantized model by the rule above, and the two accuracies apart
    by no more than the samples whose top class ties could change."""
    program = Program.load(report_dir / dpu["model"])
    x = {program.inputs[0].name: test.x}
    report = assert_verified(report_dir / quantized["model"], x, program=program)
    at_risk = max((o.top1_at_risk or 0) for o in report.outputs)
    n = len(test.y)
    apart = abs(round(dpu["accuracy"] * n) - round(quantized["accuracy"] * n))
    assert apart <= at_risk, f"{apart} samples apart, ties reach {at_risk}"
