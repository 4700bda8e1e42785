"""The plain progress line: every shown metric under its own label."""

from alphapo.train.metrics import Progress


def test_progress_line_labels_are_distinct(capsys):
    progress = Progress("lines", total=4, start=0, enabled=True)
    metrics = {
        "loss": 0.5,
        "rewards/accuracies": 0.75,
        "rewards/margins": 1.25,
        "logps/chosen": -0.5,
        "displacement/chosen": 0.125,
        "grad_norm": 2.0,
    }
    progress.update(2, 1000.0, metrics)
    line = capsys.readouterr().err
    assert line.startswith("step 2/4 | 1,000 tok/s ")
    for part in ("loss=0.5", "acc=0.75", "margin=1.25", "logp_chosen=-0.5", "displ_chosen=0.125", "grad_norm=2"):
        assert part in line
    labels = [kv.split("=")[0] for kv in line.split("|")[1].split()[2:]]
    assert len(labels) == len(set(labels)) == len(metrics)
